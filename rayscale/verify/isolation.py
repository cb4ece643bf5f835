"""Run verification in worker processes with a hard wall-clock timeout per item. No Ray needed.

Why processes: sympy can hang or eat memory on hostile answers, and math-verify's own timeouts use `signal.alarm`,
which only works in the main thread (math-verify #50/#55) and cannot interrupt a long C-level computation anyway.
Here the supervisor owns the clock: an item that overruns gets `status="timeout"`, its worker is SIGKILLed and
replaced, and the rest of that worker's chunk is handed out again. A worker that dies mid-item is replaced and the
item retried once (then `status="error"`). Results come back in input order and no exception reaches the caller
for anything an item does.

Workers are fresh interpreters (`python -m rayscale.verify.child_process`) rather than forks, so a supervisor that holds
Ray or torch threads is safe, no `__main__` is re-imported, and startup costs one import of sympy + math-verify
(about 0.5 s, see `startup_s`). Items go out in small chunks so a worker is never idle waiting for a round trip;
the timeout still applies to each item on its own.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path

import rayscale
from rayscale.types import VerifyResult

_START_TIMEOUT_S = 120.0  # a worker that is not ready by then (a wedged host) is replaced
_MAX_START_FAILURES = 3  # in a row: the environment is broken, fail the batch instead of looping


@dataclass
class _Worker:
    popen: subprocess.Popen
    conn: Connection
    started: float
    ready: bool = False
    pending: deque = field(default_factory=deque)  # indices sent and not yet answered, in order
    item_started: float = 0.0  # when the item at pending[0] began


class IsolatedVerifier:
    """A persistent pool of verifier worker processes with per-item hard timeouts.

    `verify_batch([(gold, response), ...])` -> `[VerifyResult(correct, pred, status, reason, latency_s), ...]`;
    `check_steps_batch([[step, ...], ...])` -> `[first_wrong_step index or None, ...]`.
    """

    def __init__(self, num_procs: int = 2, timeout_s: float = 5.0, memory_limit_mb: int = 4096, chunk_size: int = 32):
        if num_procs < 1 or timeout_s <= 0 or chunk_size < 1:
            raise ValueError("num_procs and chunk_size must be >= 1 and timeout_s > 0")
        self.num_procs, self.timeout_s = num_procs, float(timeout_s)
        self.memory_limit_mb, self.chunk_size = memory_limit_mb, chunk_size
        self.restarts = 0  # workers replaced after a timeout or a crash
        self.startup_s: float | None = None  # time until the first workers were all ready
        self._lock = threading.Lock()
        self._closed = False
        self._start_failures = 0
        self._created = time.monotonic()
        self._workers = [self._spawn() for _ in range(num_procs)]

    # ------------------------------------------------------------------------------------------ public
    def verify_batch(self, items: Sequence[tuple[str, str]]) -> list[VerifyResult]:
        """One result per (gold, response), in input order; status ok / no_answer / timeout / error."""
        payloads = [(str(g), str(r)) for g, r in items]
        outcomes = self.run("verify", payloads)
        return [_verify_result(o) for o in outcomes]

    def check_steps_batch(self, step_lists: Sequence[Sequence[str]]) -> list[int | None]:
        """`first_wrong_step` of each list; None also when checking failed or timed out."""
        outcomes = self.run("rayscale.verify.steps:first_wrong_step", [(list(s),) for s in step_lists])
        return [o["value"] if o["status"] == "ok" else None for o in outcomes]

    def run(self, task: str, payloads: Sequence[tuple]) -> list[dict]:
        """Generic: `task` ("verify" or "module:function") on each args tuple. Returns, per item, a dict with
        status ("ok" / "timeout" / "error"), value (the function's result when ok), pred (verify only), reason,
        latency_s."""
        with self._lock:
            if self._closed:
                raise RuntimeError("IsolatedVerifier is closed")
            return _Batch(self, task, list(payloads)).run()

    def wait_ready(self, timeout_s: float = _START_TIMEOUT_S) -> float:
        """Block until every worker has started; returns the seconds since this pool was created."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not all(w.ready for w in self._workers):
                waiting = [w for w in self._workers if not w.ready]
                if time.monotonic() > deadline:
                    raise TimeoutError(f"verifier workers not ready after {timeout_s:.0f}s")
                for conn in wait([w.conn for w in waiting], timeout=max(0.0, deadline - time.monotonic())):
                    worker = next(w for w in waiting if w.conn is conn)
                    if not self._on_message(worker, None, None):
                        self._start_failures += 1
                        if self._start_failures > _MAX_START_FAILURES:
                            raise RuntimeError(f"verifier workers fail to start ({sys.executable})")
                        self._replace(worker)
        if self.startup_s is None:
            self.startup_s = time.monotonic() - self._created
        return self.startup_s

    def worker_pids(self) -> list[int]:
        return [w.popen.pid for w in self._workers]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            try:
                w.conn.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + 2.0
        for w in self._workers:
            try:
                w.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self._kill(w)
        self._workers = []

    def __enter__(self) -> IsolatedVerifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown: best effort only
            pass

    # ------------------------------------------------------------------------------------------ workers
    def _spawn(self) -> _Worker:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        package_root = str(Path(rayscale.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, "-m", "rayscale.verify.child_process", str(child_sock.fileno()), str(os.getpid()),
               str(self.memory_limit_mb)]
        popen = subprocess.Popen(
            cmd, pass_fds=(child_sock.fileno(),), env=env, stdin=subprocess.DEVNULL,
            start_new_session=True,  # a terminal Ctrl-C goes to the supervisor, which cleans up
        )
        child_sock.close()
        return _Worker(popen, Connection(parent_sock.detach()), started=time.monotonic())

    def _replace(self, worker: _Worker) -> _Worker:
        self._kill(worker)
        self.restarts += 1
        fresh = self._spawn()
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    @staticmethod
    def _kill(worker: _Worker) -> None:
        try:
            worker.popen.kill()
            worker.popen.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        worker.conn.close()

    def _on_message(self, worker: _Worker, batch: _Batch | None, now: float | None) -> bool:
        """Read what one worker sent. False if it died (caller replaces it)."""
        try:
            while True:
                message = worker.conn.recv()
                if message[0] == "ready":
                    worker.ready = True
                    self._start_failures = 0
                elif batch is not None:
                    batch.on_message(worker, message, now if now is not None else time.monotonic())
                if not worker.conn.poll():
                    return True
        except (EOFError, OSError):
            return False


class _Batch:
    """One call to `run`: hands items to ready workers, enforces each item's deadline, collects results."""

    def __init__(self, pool: IsolatedVerifier, task: str, payloads: list[tuple]):
        self.pool, self.task, self.payloads = pool, task, payloads
        self.results: list[dict | None] = [None] * len(payloads)
        self.queue: deque[int] = deque(range(len(payloads)))
        self.preds: dict[int, str | None] = {}
        self.attempts: dict[int, int] = {}
        self.remaining = len(payloads)

    def run(self) -> list[dict]:
        pool = self.pool
        while self.remaining:
            now = time.monotonic()
            self._dispatch(now)
            deadline = self._next_deadline()
            conns = [w.conn for w in pool._workers]
            for conn in wait(conns, timeout=max(0.0, deadline - time.monotonic())):
                worker = next((w for w in pool._workers if w.conn is conn), None)
                if worker is not None and not pool._on_message(worker, self, time.monotonic()):
                    self._on_death(worker)
            self._enforce_deadlines(time.monotonic())
        return self.results  # type: ignore[return-value]

    # -------------------------------------------------------------------- scheduling
    def _dispatch(self, now: float) -> None:
        idle = [w for w in self.pool._workers if w.ready and not w.pending]
        for worker in idle:
            if not self.queue:
                return
            share = math.ceil(len(self.queue) / max(1, len(idle)))
            size = max(1, min(self.pool.chunk_size, share))
            chunk = [self.queue.popleft() for _ in range(min(size, len(self.queue)))]
            try:
                worker.conn.send(("run", self.task, [(i, self.payloads[i]) for i in chunk]))
            except OSError:
                self.queue.extendleft(reversed(chunk))
                self._on_death(worker)
                continue
            worker.pending.extend(chunk)
            worker.item_started = now

    def _next_deadline(self) -> float:
        deadlines = [w.item_started + self.pool.timeout_s for w in self.pool._workers if w.pending]
        deadlines += [w.started + _START_TIMEOUT_S for w in self.pool._workers if not w.ready]
        return min(deadlines, default=time.monotonic() + 1.0)

    def _enforce_deadlines(self, now: float) -> None:
        for worker in list(self.pool._workers):
            if worker.pending and now >= worker.item_started + self.pool.timeout_s:
                index = worker.pending.popleft()
                self._finish(index, {"status": "timeout", "value": None,
                                     "reason": f"no result within {self.pool.timeout_s:g}s; worker killed"},
                             now - worker.item_started)
                self.queue.extendleft(reversed(worker.pending))
                worker.pending.clear()
                self.pool._replace(worker)
            elif not worker.ready and now >= worker.started + _START_TIMEOUT_S:
                self._start_failed(worker)

    # -------------------------------------------------------------------- events
    def on_message(self, worker: _Worker, message: tuple, now: float) -> None:
        kind, index = message[0], message[1]
        if not worker.pending or worker.pending[0] != index:
            return  # a message about an item no longer ours (cannot happen with one reader; be safe)
        if kind == "pred":
            self.preds[index] = message[2]
            return
        (status, value), compute_s = message[2], message[3]
        worker.pending.popleft()
        outcome = {"status": "ok", "value": value, "reason": ""} if status == "ok" else \
            {"status": "error", "value": None, "reason": value}
        self._finish(index, outcome, compute_s)  # the worker's own clock: results arrive in bursts here
        worker.item_started = now  # the next item's deadline: never earlier than its real start

    def _on_death(self, worker: _Worker) -> None:
        code = worker.popen.poll()
        if worker.pending:
            index = worker.pending.popleft()
            self.attempts[index] = self.attempts.get(index, 0) + 1
            if self.attempts[index] >= 2:
                self._finish(index, {"status": "error", "value": None,
                                     "reason": f"worker died twice on this item (exit code {code})"}, 0.0)
            else:
                self.queue.appendleft(index)  # retried once: the crash may not have been this item's doing
            self.queue.extendleft(reversed(worker.pending))
            worker.pending.clear()
        elif not worker.ready:
            self._start_failed(worker)
            return
        self.pool._replace(worker)

    def _start_failed(self, worker: _Worker) -> None:
        pool = self.pool
        pool._start_failures += 1
        if pool._start_failures > _MAX_START_FAILURES:
            reason = f"verifier workers fail to start ({sys.executable} -m rayscale.verify.child_process)"
            while self.queue:
                self._finish(self.queue.popleft(), {"status": "error", "value": None, "reason": reason}, 0.0)
            pool._start_failures = 0
        pool._replace(worker)

    def _finish(self, index: int, outcome: dict, latency_s: float) -> None:
        if self.results[index] is not None:
            return
        outcome["latency_s"] = latency_s
        if self.task == "verify":
            outcome["pred"] = self.preds.get(index)
        self.results[index] = outcome
        self.remaining -= 1


def _verify_result(outcome: dict) -> VerifyResult:
    """A generic outcome of the "verify" task -> its VerifyResult, timed by the supervisor."""
    if outcome["status"] == "ok":
        return replace(outcome["value"], latency_s=outcome["latency_s"])
    return VerifyResult(False, outcome.get("pred"), outcome["status"], outcome["reason"], outcome["latency_s"])
