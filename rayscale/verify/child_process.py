"""One verifier child process of IsolatedVerifier (rayscale.verify.isolation, the supervisor that starts it):
`python -m rayscale.verify.child_process FD SUPERVISOR_PID MEMORY_LIMIT_MB`.

Always a fresh interpreter, never a fork of a process that may hold Ray or torch threads. It reads task chunks
from a socket and answers one message per item; the supervisor owns the clock and kills this process when an item
overruns. It also dies with its supervisor: the kernel's parent-death signal on Linux, and a watchdog thread
everywhere.

Messages (pickled by multiprocessing.connection, from the trusted supervisor only):
  in : ("run", task, [(index, args), ...]) | ("stop",)
  out: ("ready", pid) | ("pred", index, pred) | ("done", index, ("ok", value) | ("error", reason), compute_s)
task "verify" takes (gold, response) and its value is a `rayscale.types.VerifyResult` (latency_s left for the
supervisor to fill in); when its comparison runs longer than `_PRED_AFTER_S` a reporter thread sends
the extracted answer ahead of the verdict, so a timeout still knows it (the quick majority costs no extra message).
Any other task is "module:function", called as function(*args).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection

from rayscale.types import VerifyResult
from rayscale.verify import extract_answer, grade_answer, is_equivalent

try:
    import resource
except ImportError:  # not on Windows; the timeout still bounds the work
    resource = None

_PRED_AFTER_S = 0.02


class _Channel:
    """The socket to the supervisor, shared by the main thread and the reporter thread."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.lock = threading.Lock()
        self.slow: tuple[int, str, float] | None = None  # (index, pred, started) of the comparison running now

    def send(self, message: tuple) -> None:
        with self.lock:
            self.conn.send(message)

    def report_slow_items(self) -> None:
        while True:
            time.sleep(_PRED_AFTER_S / 2)
            with self.lock:
                slow = self.slow
                if slow is not None and time.perf_counter() - slow[2] >= _PRED_AFTER_S:
                    self.conn.send(("pred", slow[0], slow[1]))
                    self.slow = None


def main(argv: list[str]) -> int:
    fd, supervisor_pid, memory_limit_mb = int(argv[0]), int(argv[1]), int(argv[2])
    _die_with(supervisor_pid)
    _limit_memory(memory_limit_mb)
    channel = _Channel(Connection(fd))
    _warm_up()
    threading.Thread(target=channel.report_slow_items, name="pred-reporter", daemon=True).start()
    conn = channel.conn
    channel.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return 0  # supervisor gone
        if message[0] == "stop":
            return 0
        _, task, chunk = message
        for index, args in chunk:
            start = time.perf_counter()
            result = _run(task, index, args, channel)
            channel.send(("done", index, result, time.perf_counter() - start))


def _run(task: str, index: int, args: tuple, channel: _Channel) -> tuple[str, object]:
    try:
        if task == "verify":
            return "ok", _verify(index, *args, channel=channel)
        module, _, name = task.partition(":")
        return "ok", getattr(importlib.import_module(module), name)(*args)
    except MemoryError:
        return "error", "out of memory (verifier process memory limit)"
    except RecursionError:
        return "error", "nested too deeply"
    except Exception as e:  # noqa: BLE001 - reported as this item's error; the process lives on
        return "error", f"{type(e).__name__}: {str(e)[:200]}"


def _verify(index: int, gold: str, response: str, channel: _Channel) -> VerifyResult:
    pred = extract_answer(response)
    channel.slow = (index, pred, time.perf_counter()) if pred is not None else None
    try:
        return grade_answer(gold, pred)
    finally:
        with channel.lock:
            channel.slow = None


def _warm_up() -> None:
    """Exercise the parser once so the first real item does not pay for it."""
    is_equivalent("\\sqrt{2}", "x")


def _die_with(supervisor_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        except Exception:  # noqa: BLE001, S110 - the watchdog below still covers it
            pass

    def watchdog() -> None:
        while True:
            if os.getppid() != supervisor_pid:
                os._exit(0)
            time.sleep(0.5)

    if os.getppid() != supervisor_pid:
        os._exit(0)  # the supervisor died before we got here
    threading.Thread(target=watchdog, name="supervisor-watchdog", daemon=True).start()


def _limit_memory(limit_mb: int) -> None:
    """Address-space cap so an exploding sympy expansion raises MemoryError here instead of swapping the host."""
    if limit_mb <= 0 or resource is None:
        return
    try:
        limit = limit_mb * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):
        pass  # not supported here (e.g. macOS RLIMIT_AS); the timeout still bounds the work


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
