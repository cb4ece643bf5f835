"""Controller state on disk: what a resumed run needs to draw the same prompts from the same policy.

A checkpoint directory `<checkpoint.dir>/iter_000012/` holds `controller.json` (iteration, policy version, data
cursor, starting model, run id), `manifest.json` (size and SHA-256 of every other file in it) and `learner/` (the
DeepSpeed checkpoint with optimizer and scheduler state). Sampling seeds are derived from (algo.seed, iteration,
prompt index), so no RNG state needs saving for the draws to repeat.

`controller.json` is written last and atomically: a directory without it is an interrupted save and is ignored.
Every path it stores is relative to the checkpoint's own directory (a starting model inside the run directory
too), so a copied or moved run directory resumes from its own checkpoints. Resume checks a checkpoint against its
manifest before using it and falls back to the newest one that checks out, saying what it skipped and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from rayscale.errors import ConfigError

STATE_FILE = "controller.json"
MANIFEST_FILE = "manifest.json"
_RELATIVE = "relative"  # controller.json's list of the fields stored relative to the checkpoint directory


class CheckpointError(ConfigError):
    """No checkpoint a resume can use (exit status 2: the user picks another, or starts over)."""


@dataclass
class ControllerState:
    iteration: int
    policy_version: int
    cursor: dict[str, int]
    start_model: str  # the policy the actors are built from before the learner checkpoint is loaded
    path: str = ""  # the checkpoint directory (where it was read from)
    learner_dir: str = ""  # the learner's checkpoint inside it
    run_id: str = ""  # the run that wrote it: keep_last prunes only the current run's checkpoints
    saved_at: float = 0.0  # time.time() of the save: the newest save wins, whatever its iteration


def checkpoint_path(root: Path, iteration: int) -> Path:
    return Path(root) / f"iter_{iteration:06d}"


# ------------------------------------------------------------------------------------------------ writing
def write_state(path: Path, state: ControllerState, run_dir: Path | None = None) -> None:
    """The manifest of what is in `path` already (the learner's files), then controller.json, atomically.
    Paths inside `path`, and a starting model inside `run_dir`, are stored relative to `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    data, relative = asdict(state), []
    for key in ("path", "learner_dir", "start_model"):
        value = data[key]
        within = path if key != "start_model" else run_dir
        if value and within is not None and _inside(Path(value), Path(within)):
            data[key] = os.path.relpath(Path(value).resolve(), path.resolve())
            relative.append(key)
    data[_RELATIVE] = relative
    _write_atomic(path / MANIFEST_FILE, json.dumps({"files": manifest(path)}, indent=1))
    _write_atomic(path / STATE_FILE, json.dumps(data, indent=2))


def manifest(path: Path) -> dict[str, dict[str, int | str]]:
    """{relative file name: {"size", "sha256"}} of every file under `path` but controller.json and the manifest."""
    out = {}
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        name = file.relative_to(path).as_posix()
        if name not in (STATE_FILE, MANIFEST_FILE, STATE_FILE + ".tmp", MANIFEST_FILE + ".tmp"):
            out[name] = {"size": file.stat().st_size, "sha256": _sha256(file)}
    return out


def _sha256(file: Path) -> str:
    with open(file, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_atomic(file: Path, text: str) -> None:
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, file)


def _inside(p: Path, root: Path) -> bool:
    try:
        p.resolve().relative_to(root.resolve())
        return True
    except (ValueError, OSError):
        return False


# ------------------------------------------------------------------------------------------------ reading
def read_state(path: Path) -> ControllerState:
    path = Path(path)
    file = path / STATE_FILE
    try:
        data = json.loads(file.read_text())
        relative = data.pop(_RELATIVE, [])
        for key in relative:
            data[key] = os.path.normpath(path.resolve() / data[key])
        state = ControllerState(**data)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is not a rayscale checkpoint (no {STATE_FILE})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError) as e:
        raise ValueError(f"{file}: unreadable controller state ({type(e).__name__}: {e})") from None
    if "path" not in relative:  # written by an older rayscale: absolute paths, taken where they point now
        state.path, state.learner_dir = str(path), str(path / "learner")
    return state


def problem(path: Path) -> str | None:
    """Why the checkpoint at `path` cannot be resumed from (None: every file of its manifest is there, whole)."""
    path = Path(path)
    try:
        read_state(path)
    except (FileNotFoundError, ValueError) as e:
        return str(e)
    listed = path / MANIFEST_FILE
    if not listed.is_file():  # written before manifests existed: the files it needs must at least be there
        return None if (path / "learner").is_dir() else "no learner/ directory"
    try:
        files = json.loads(listed.read_text())["files"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        return f"{MANIFEST_FILE} unreadable ({type(e).__name__})"
    for name, want in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        size = file.stat().st_size
        if size != want["size"]:
            return f"{name} is {size} bytes, {want['size']} were written (truncated or overwritten)"
        try:
            if _sha256(file) != want["sha256"]:
                return f"{name} does not match its checksum (the file changed after the save)"
        except OSError as e:
            return f"{name} is unreadable ({e.strerror or e})"
    return None


def complete_checkpoints(root: Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("iter_*") if (p / STATE_FILE).is_file())


def _newest_first(paths: list[Path]) -> list[Path]:
    """Most recently saved first (a run resumed from an older checkpoint saves lower iterations later)."""
    def key(p: Path) -> tuple[float, str]:
        try:
            return (read_state(p).saved_at, p.name)
        except (FileNotFoundError, ValueError):
            return (float("inf"), p.name)  # unreadable: looked at (and reported) first
    return sorted(paths, key=key, reverse=True)


def find_resume_state(resume: str, root: Path, say: Callable[[str], None] = print) -> ControllerState | None:
    """`never`: start fresh; `auto`: the newest checkpoint under `root` that checks out (each one skipped is
    reported through `say`), None when there is none; else a checkpoint path, which must check out."""
    if resume == "never":
        return None
    if resume != "auto":
        path = Path(resume)
        why = problem(path)
        if why is not None:
            raise CheckpointError(f"checkpoint.resume={resume}: cannot resume from it: {why}. "
                                  f"{_alternatives(Path(root))}")
        return read_state(path)
    found = complete_checkpoints(root)
    skipped = []
    for path in _newest_first(found):
        why = problem(path)
        if why is None:
            return read_state(path)
        skipped.append(f"{path}: {why}")
        say(f"checkpoint {path} skipped: {why}")
    if not skipped:
        return None
    raise CheckpointError("checkpoint.resume=auto: no usable checkpoint under " + str(root) + ":\n  "
                          + "\n  ".join(skipped) + "\nresume from a checkpoint you trust with "
                          "checkpoint.resume=PATH, or start over with checkpoint.resume=never "
                          "checkpoint.overwrite=true (which deletes them)")


def _alternatives(root: Path) -> str:
    usable = [str(p) for p in complete_checkpoints(root) if problem(p) is None]
    if usable:
        return "Usable checkpoints: " + ", ".join(usable) + " (checkpoint.resume=PATH, or auto for the newest)"
    return "Give another checkpoint with checkpoint.resume=PATH, or start over with checkpoint.resume=never"


# ------------------------------------------------------------------------------------------------ pruning
def prune(root: Path, keep_last: int, run_id: str = "") -> None:
    """Remove all but the `keep_last` most recently saved checkpoints of run `run_id`; other runs' stay."""
    mine = []
    for p in complete_checkpoints(root):
        try:
            if read_state(p).run_id == run_id:
                mine.append(p)
        except (FileNotFoundError, ValueError):
            continue  # unreadable: not provably this run's, and resume reports it
    for old in _newest_first(mine)[keep_last:]:
        shutil.rmtree(old, ignore_errors=True)


def new_state(iteration: int, policy_version: int, cursor: dict[str, int], start_model: str, path: Path,
              run_id: str) -> ControllerState:
    return ControllerState(iteration=iteration, policy_version=policy_version, cursor=cursor, start_model=start_model,
                           path=str(path), learner_dir=str(Path(path) / "learner"), run_id=run_id,
                           saved_at=time.time())
