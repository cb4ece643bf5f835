"""Writing to disk without a traceback: a full disk or an unwritable path is named, with its cause.

The run directory is checked once before anything is written (`make_run_dir`, exit 2); a write that fails later
(a checkpoint, metrics.jsonl) for lack of space is a failure the run cannot survive (exit 3). torch reports a full
disk as `[enforce fail at inline_container.cc] unexpected pos ...`, so the free space decides, not the message.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

from rayscale.errors import ConfigError
from rayscale.failures import BAD_INPUT, FAILED, RunFailure

NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
UNWRITABLE = {errno.EACCES, errno.EROFS, errno.EPERM}
LOW_SPACE_BYTES = 1 << 20  # under this many free bytes the disk counts as full: a checkpoint cannot fit


def make_run_dir(run_dir: Path) -> None:
    """Create the run directory and check a file can be written in it; a ConfigError naming it and why not."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-check-"):
            pass
    except OSError as e:
        raise ConfigError(f"tracking.run_dir={run_dir}: cannot write there ({e.strerror or e}"
                          f"{': ' + str(e.filename) if e.filename else ''}); give a writable tracking.run_dir") from None


def free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem of `path` (or of its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def disk_full(path: Path, err: BaseException) -> bool:
    """Whether `err`, raised while writing under `path`, came from a full disk."""
    if isinstance(err, OSError) and err.errno in NO_SPACE:
        return True
    if "No space left" in str(err) or "Disk quota exceeded" in str(err):
        return True
    free = free_bytes(path)
    return free is not None and free < LOW_SPACE_BYTES


def write_failure(what: str, path: Path, err: BaseException) -> RunFailure | None:
    """The RunFailure for a failed write of `what` under `path`, when the disk is full or the path unwritable."""
    if disk_full(path, err):
        free = free_bytes(path)
        return RunFailure(what, f"no space left on the disk of {path} ({free if free is not None else '?'} bytes "
                          "free)", "Free space there, or point checkpoint.dir / tracking.run_dir at a larger disk; a "
                          "smaller checkpoint.keep_last keeps fewer checkpoints")
    if isinstance(err, OSError) and err.errno in UNWRITABLE:
        return RunFailure(what, f"cannot write {err.filename or path}: {err.strerror}",
                          "Make it writable, or point checkpoint.dir / tracking.run_dir elsewhere")
    return None


def os_error_message(err: OSError) -> tuple[str, int] | None:
    """(message, exit status) for a write failure that reached the command line: a full disk is a run failure (3),
    an unwritable path bad input (2). None: another OSError (a bug's traceback stays)."""
    where = f" {err.filename}" if err.filename else ""
    if err.errno in NO_SPACE:
        return f"no space left on the disk of{where} ({err.strerror})", FAILED
    if err.errno in UNWRITABLE:
        return f"cannot write{where}: {err.strerror}", BAD_INPUT
    return None

