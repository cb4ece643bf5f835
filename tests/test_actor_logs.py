"""The quiet console (rayscale.logs): an actor process's output goes to <run_dir>/logs/, rayscale's own warnings
still reach the console. Each case runs the hook in a fresh interpreter, as Ray runs it in a fresh worker."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from rayscale import logs

ACTOR = textwrap.dedent("""
    import logging, os, subprocess, sys, warnings
    from rayscale.logs import capture_worker_output
    capture_worker_output()
    print("engine info line", flush=True)                      # a library's chatter on stdout
    os.write(2, b"engine C-level stderr\\n")                    # below Python
    subprocess.run([sys.executable, "-c", "print('child process line')"])  # vLLM's engine core, a sandbox
    logging.getLogger("vllm").warning("Attempted to load weight with dtype float32")
    warnings.warn("a FutureWarning from inside a library", FutureWarning)
    logging.getLogger("rayscale.actors.rollout").warning("rollout worker 0: the user must act on this")
""")


def run_actor(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", ACTOR], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_actor_output_goes_to_the_run_directory_and_rayscale_warnings_stay_on_the_console(tmp_path):
    env = logs.runtime_env(tmp_path, verbose=False)
    assert env["worker_process_setup_hook"] == "rayscale.logs.capture_worker_output"
    r = run_actor({**env["env_vars"], logs.VERBOSE_ENV: ""})
    assert r.returncode == 0, r.stderr
    console = r.stdout + r.stderr
    assert console.strip() == "WARNING rayscale.actors.rollout: rollout worker 0: the user must act on this"
    (log,) = (tmp_path / "logs").iterdir()
    assert log.name.startswith("worker-") and log.suffix == ".log"
    text = log.read_text()
    for line in ("engine info line", "engine C-level stderr", "child process line",
                 "Attempted to load weight with dtype float32", "a FutureWarning from inside a library",
                 "the user must act on this"):
        assert line in text, line


def test_verbose_keeps_everything_on_the_console(tmp_path, monkeypatch):
    assert logs.runtime_env(tmp_path, verbose=True) == {}
    monkeypatch.setenv(logs.VERBOSE_ENV, "1")
    assert logs.runtime_env(tmp_path, verbose=False) == {}
    r = run_actor({})  # no log directory asked for: the hook changes nothing
    assert "engine info line" in r.stdout and "child process line" in r.stdout
    assert "Attempted to load weight" in r.stderr


def test_an_unwritable_log_directory_leaves_the_output_on_the_console_and_says_why(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the directory should be: mkdir fails even for root
    r = run_actor({logs.LOG_DIR_ENV: str(blocker / "logs")})
    assert r.returncode == 0, r.stderr
    assert "cannot write the actor log" in r.stderr and "engine info line" in r.stdout


def test_a_node_without_the_run_directory_does_not_create_one(tmp_path):
    """On a node that does not share the run directory the hook creates nothing (an empty directory of the same
    name would hide the missing shared storage from the start-up check) and keeps the output on the console."""
    missing_run_dir = tmp_path / "elsewhere" / "run"
    r = run_actor({logs.LOG_DIR_ENV: str(missing_run_dir / "logs")})
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "elsewhere").exists()
    assert "cannot write the actor log" in r.stderr and "engine info line" in r.stdout
