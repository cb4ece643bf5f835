"""Where the actors' output goes: rayscale's own lines on the console, everything in <run_dir>/logs/.

A training run's actors load engines that talk a lot: vLLM's config dump and compile warm-up, its per-tensor
dtype warnings, weight-loading progress bars, DeepSpeed's and torch's FutureWarnings. Ray streams every actor's
stdout and stderr to the driver, so on the SmolLM2 config they buried the run's own lines (190 lines before the
first iteration, 6 of them rayscale's). Instead, when the driver starts or joins Ray for a run it asks Ray to run
`capture_worker_output` first thing in every worker process of the job (Ray's `worker_process_setup_hook`):

- the process's file descriptors 1 and 2 go to `<run_dir>/logs/worker-<pid>.log`, so everything written there
  (Python, C++, OpenMP, child processes such as vLLM's engine core or the verifier's sandboxes) lands in the file;
- records of rayscale's own loggers at WARNING and above still reach the console (the descriptor Ray streams to
  the driver, kept aside before the switch), so a warning that needs the user's action and every error are seen.

`tracking.verbose=true`, or RAYSCALE_VERBOSE=1 in the driver's environment, leaves the actors' output as Ray
streams it. Ray-free: Ray imports this module by name in each worker.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOG_DIR_ENV = "RAYSCALE_LOG_DIR"  # set by the driver in the job's runtime_env; read by the hook in each worker
VERBOSE_ENV = "RAYSCALE_VERBOSE"
HOOK = f"{__name__}.capture_worker_output"
CONSOLE_LOGGER = "rayscale"  # the logger tree whose warnings stay on the console


def verbose_requested(config_verbose: bool) -> bool:
    """tracking.verbose, or RAYSCALE_VERBOSE=1 (handy for a one-off run without editing its config)."""
    return config_verbose or os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def log_dir(run_dir: str | Path) -> Path:
    return Path(run_dir).resolve() / "logs"


def runtime_env(run_dir: str | Path, verbose: bool) -> dict:
    """What `ray.init(runtime_env=...)` needs so every worker of the job writes into `<run_dir>/logs/`; empty when
    verbose. Ray merges it with a submitted job's own runtime_env (env_vars key by key)."""
    if verbose_requested(verbose):
        return {}
    return {"worker_process_setup_hook": HOOK, "env_vars": {LOG_DIR_ENV: str(log_dir(run_dir))}}


def capture_worker_output() -> Path | None:
    """Send this process's stdout/stderr to `$RAYSCALE_LOG_DIR/worker-<pid>.log`, keeping rayscale's warnings on
    the console. Returns the file, or None (no directory asked for, or it cannot be written: then nothing changes
    and the output keeps going to the console, with one line saying why)."""
    directory = os.environ.get(LOG_DIR_ENV)
    if not directory:
        return None
    path = Path(directory) / f"worker-{os.getpid()}.log"
    try:
        # Only inside a run directory that exists here: a node that does not share it must not grow an empty one
        # of the same name (the start-up check, cluster.require_shared_storage, tells the two apart).
        path.parent.mkdir(exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as e:  # e.g. a run directory this node cannot write: keep today's behaviour, say so once
        print(f"rayscale: cannot write the actor log {path} ({e.strerror}); this worker's output stays on the "
              "console", file=sys.stderr, flush=True)
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    console = os.fdopen(os.dup(2), "w", buffering=1)  # what Ray streams to the driver, kept for our warnings
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    fmt = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    for stream in (console, sys.stderr):  # the console, and the file beside everything else
        handler = logging.StreamHandler(stream)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(fmt)
        logging.getLogger(CONSOLE_LOGGER).addHandler(handler)
    print(f"rayscale: pid {os.getpid()} logs here; rayscale warnings also go to the console", flush=True)
    return path
