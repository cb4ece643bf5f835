"""Process isolation: hard timeouts, killed-and-replaced workers, crashes, memory caps, hostile inputs. No Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from rayscale.types import VerifyResult
from rayscale.verify import verify_response
from rayscale.verify.isolation import IsolatedVerifier

TIMEOUT_S = 2.0


def hostile_responses(sentinel: Path) -> list[str]:
    """The issue's hostile set; `sentinel` is an absolute path, so a successful injection is seen wherever the
    worker's working directory is."""
    return [
        f"__import__('os').system('touch {sentinel}')",
        f"\\boxed{{__import__('os').system('touch {sentinel}')}}",
        f"The answer is __import__('os').system('touch {sentinel}')",
        *HOSTILE,
    ]


HOSTILE = [
    "\\boxed{().__class__.__bases__[0]}",
    "\\boxed{9^{9^{9^{9}}}}",
    "\\boxed{(x+1)^{10^{8}}}",
    "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "x" * 1_000_000 + "\\boxed{42}",
    "\\boxed{" * 140_000,
]
HANGS = ("(x+1)^{9000}", "\\boxed{x^{9000}+1}")  # passes every up-front guard; sympy grinds for minutes


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_dead(pids, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.fixture(scope="module")
def verifier():
    v = IsolatedVerifier(num_procs=2, timeout_s=TIMEOUT_S, memory_limit_mb=2048)
    v.wait_ready()
    yield v
    v.close()


def test_results_match_in_process_and_keep_input_order(verifier):
    items = [("1/2", "\\boxed{0.5}"), ("3", "nothing"), ("x+1", "\\boxed{1+x}"), ("(1,2)", "\\boxed{(2,1)}"),
             ("18", "#### 18"), ("5", "\\boxed{9^{9^{9^{9}}}}")] * 5
    results = verifier.verify_batch(items)
    assert len(results) == len(items)
    for (gold, response), result in zip(items, results):
        assert isinstance(result, VerifyResult) and isinstance(result.latency_s, float)
        assert replace(result, latency_s=0.0) == verify_response(gold, response)  # all but the timing


def test_hostile_inputs_return_within_timeout_and_run_nothing(verifier, tmp_path):
    sentinel = tmp_path / "SENTINEL"
    hostile = hostile_responses(sentinel)
    items = [("1", h) for h in hostile] + [(h, "\\boxed{1}") for h in hostile[:7]] + [HANGS]
    restarts = verifier.restarts
    results = verifier.verify_batch(items)
    assert [r.correct for r in results] == [False] * len(items)
    assert all(r.status in ("ok", "no_answer", "error") for r in results[:-1]), results
    # only the genuine hang uses its full timeout, and only its worker is killed (latency: benchmarks/verifier.py)
    assert results[-1].status == "timeout" and results[-1].pred == "x^{9000}+1"
    assert verifier.restarts == restarts + 1
    assert not sentinel.exists()


def test_a_hung_worker_is_killed_and_replaced(verifier):
    before = set(verifier.worker_pids())
    restarts = verifier.restarts
    out = verifier.run("time:sleep", [(0.01,), (60,), (0.01,), (0.01,)])
    assert [o["status"] for o in out] == ["ok", "timeout", "ok", "ok"]
    assert out[1]["latency_s"] >= TIMEOUT_S  # given its whole timeout before the kill
    assert verifier.restarts == restarts + 1
    gone = before - set(verifier.worker_pids())
    assert len(gone) == 1 and _wait_dead(gone)
    assert verifier.verify_batch([("2", "\\boxed{2}")])[0].correct is True  # the replacement works


def test_a_crashing_item_is_retried_once_then_reported(verifier):
    out = verifier.run("os:_exit", [(3,)])
    assert out[0]["status"] == "error" and "died twice" in out[0]["reason"]
    (ok,) = verifier.run("math:sqrt", [(16,)])
    assert isinstance(ok.pop("latency_s"), float) and ok == {"status": "ok", "value": 4.0, "reason": ""}


def test_memory_cap_turns_an_explosion_into_an_error():
    with IsolatedVerifier(num_procs=1, timeout_s=10, memory_limit_mb=1024) as v:
        out = v.run("builtins:bytearray", [(4 * 1024**3,), (10,)])
    assert out[0]["status"] == "error" and "memory" in out[0]["reason"]
    assert out[1]["status"] == "ok"


def test_check_steps_batch(verifier):
    assert verifier.check_steps_batch([["7*3=21", "5+21=27"], ["1+1=2"], []]) == [1, None, None]


@linux_only
def test_close_and_supervisor_death_leave_no_workers():
    v = IsolatedVerifier(num_procs=2, timeout_s=5)
    v.wait_ready()
    pids = v.worker_pids()
    v.close()
    assert _wait_dead(pids)

    script = textwrap.dedent("""
        import sys, time
        from rayscale.verify.isolation import IsolatedVerifier
        v = IsolatedVerifier(num_procs=2, timeout_s=5)
        v.wait_ready()
        print(*v.worker_pids(), flush=True)
        v.run("time:sleep", [(60,), (60,)])  # both workers busy when the supervisor is killed
    """)
    path = os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    supervisor = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pids = [int(p) for p in supervisor.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        time.sleep(0.3)
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(timeout=10)
        assert _wait_dead(pids), "worker processes outlived their supervisor"
    finally:
        supervisor.kill()


def test_bad_arguments_and_closed_pool():
    with pytest.raises(ValueError):
        IsolatedVerifier(num_procs=0)
    v = IsolatedVerifier(num_procs=1, timeout_s=1)
    v.close()
    with pytest.raises(RuntimeError):
        v.verify_batch([("1", "1")])
