"""The Ray verifier pool: input order, step checks, and recovery from an actor killed mid-batch."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from rayscale.types import VerifyResult
from rayscale.verify import verify_response

pytestmark = pytest.mark.ray

TIMEOUT_S = 1.5
HANG = ("(x+1)^{9000}", "\\boxed{x^{9000}+1}")  # sympy grinds on this for minutes: only the timeout ends it


@pytest.fixture(scope="module")
def ray_driver():
    ray = pytest.importorskip("ray")
    # address="local": a cluster of our own, even when another process on this host runs one
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(ray_driver):
    from rayscale.actors.verifier import VerifierPool

    p = VerifierPool(num_workers=2, timeout_s=TIMEOUT_S, batch_size=4)
    yield p
    p.shutdown()


def _strip(result: VerifyResult) -> VerifyResult:
    return replace(result, latency_s=0.0)  # as verify_response (in-process, untimed) has it


def test_pool_uses_the_callers_ray_and_keeps_input_order(pool, ray_driver):
    assert not pool._owns_ray and ray_driver.is_initialized()
    items = [(str(i), f"so \\boxed{{{i if i % 3 else i + 1}}}") for i in range(30)]
    results = pool.verify(items)
    assert [_strip(r) for r in results] == [verify_response(g, r) for g, r in items]
    assert all(isinstance(r.latency_s, float) for r in results)  # every result carries its latency
    assert pool.verify([]) == []


def test_check_steps(pool):
    lists = [["7*3=21", "5+21=26"], ["7*3=21", "5+21=27"], ["no claims here"], ["9*9=80"]] * 3
    assert pool.check_steps(lists) == [None, 1, None, 0] * 3


def test_killed_actor_is_replaced_and_its_items_redispatched(pool, ray_driver):
    from tests.test_verify_isolation import _wait_dead

    items = [(str(i), f"\\boxed{{{i}}}") for i in range(24)]
    items[1] = items[9] = HANG  # keep both actors busy long enough to kill one mid-batch
    victim = pool.actors[0]
    victim_workers = next(s["worker_pids"] for s in pool.startup if s["pid"] == ray_driver.get(
        victim.ready.remote())["pid"])
    restarts = pool.restarts
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("results", pool.verify(items)))
    thread.start()
    time.sleep(0.7)
    ray_driver.kill(victim)
    thread.join(timeout=120)
    assert not thread.is_alive()
    results = out["results"]
    assert pool.restarts == restarts + 1 and pool.actors[0] is not victim
    for i, (item, result) in enumerate(zip(items, results)):
        if item == HANG:
            assert result.status == "timeout" and result.pred == "x^{9000}+1"
        else:
            assert _strip(result) == verify_response(*item), i
    assert _wait_dead(victim_workers), "the killed actor's verifier processes outlived it"
    assert pool.verify([("1", "\\boxed{1}")])[0].correct is True  # the replacement serves


def test_from_config(ray_driver):
    from rayscale.actors.verifier import VerifierPool
    from rayscale.config import RoleResources, VerifierConfig

    p = VerifierPool.from_config(VerifierConfig(num_workers=1, timeout_s=2, batch_size=8),
                                 RoleResources(num_cpus=0.25))
    try:
        assert len(p.actors) == 1 and p.batch_size == 8
        assert p.verify([("2", "#### 2")])[0].status == "ok"
    finally:
        p.shutdown()
    assert ray_driver.is_initialized()  # the caller's Ray is left running


def test_a_verifier_killed_mid_stream_loses_and_doubles_nothing(pool, ray_driver):
    """Streaming stages (rayscale.algos.streaming) grade chunk by chunk through the pool; one of its actors is
    killed while the verify stage has a chunk in flight: every sample is graded once, as without the kill."""
    from rayscale.algos.streaming import Streaming
    from rayscale.data import Problem
    from rayscale.types import Sample

    slow = {1, 5}  # prompts whose gold keeps sympy grinding until the timeout: the actors are busy at the kill
    batch = [Problem(id=f"p{i}", question="?", gold_answer=HANG[0] if i in slow else str(i)) for i in range(12)]
    texts = [[HANG[1] if i in slow else f"\\boxed{{{i + j % 2}}}" for j in range(4)] for i in range(12)]
    calls: list[int] = []

    def verify(items):
        calls.append(len(items))
        return pool.verify(items)

    stream = Streaming(batch, verify, lambda items: [], lambda p, gs: [])
    restarts, victim = pool.restarts, pool.actors[0]
    try:
        for i in range(12):
            stream.chunk_done([i], [[Sample(f"p{i}", "?", "", t) for t in texts[i]]])
            if i == 5:
                time.sleep(0.7)
                ray_driver.kill(victim)
        graded = stream.graded()
    finally:
        stream.close()
    assert pool.restarts == restarts + 1 and sum(calls) == 48  # each sample sent once by the stage
    for i, gs in enumerate(graded):
        assert [g.sample.response for g in gs] == texts[i]
        assert [g.correct for g in gs] == ([False] * 4 if i in slow else [j % 2 == 0 for j in range(4)]), i
