"""The verifier pool: N Ray actors, each a thin shell around an IsolatedVerifier (worker processes + hard timeouts).

`VerifierPool.verify` cuts a batch into chunks, keeps two chunks in flight per actor (so none idles between
chunks), and reassembles the results in input order. An actor that dies (killed, OOM, node lost) is replaced and
its in-flight chunks are sent again; a chunk that kills actors repeatedly gets `status="error"` results instead of
looping. A chunk that overruns any honest bound (per-item timeouts make one) is treated as a hung actor: killed,
replaced, re-sent.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError

from rayscale import cluster
from rayscale.actors.placement import RolePlacement, actor_location
from rayscale.config import RoleResources, VerifierConfig
from rayscale.types import VerifyResult
from rayscale.verify.isolation import IsolatedVerifier

log = logging.getLogger(__name__)

_IN_FLIGHT_PER_ACTOR = 2
_MAX_CHUNK_RETRIES = 2  # re-sends of one chunk after its actor died; then its items come back as errors
_ACTOR_START_BUDGET_S = 120.0  # an actor's startup (Ray worker + verifier processes) counted into hang detection


class VerifierWorker:
    """One Ray actor: owns `procs` verifier processes and forwards batches to them."""

    def __init__(self, timeout_s: float, procs: int = 1, memory_limit_mb: int = 4096):
        self._verifier = IsolatedVerifier(procs, timeout_s, memory_limit_mb)

    def ready(self) -> dict:
        startup_s = self._verifier.wait_ready()
        return {"pid": os.getpid(), "worker_pids": self._verifier.worker_pids(), "startup_s": startup_s}

    def verify(self, items: list[tuple[str, str]]) -> list[VerifyResult]:
        return self._verifier.verify_batch(items)

    def check_steps(self, step_lists: list[list[str]]) -> list[int | None]:
        return self._verifier.check_steps_batch(step_lists)

    def location(self) -> dict:
        return actor_location()

    def stats(self) -> dict:
        return {"restarts": self._verifier.restarts, "worker_pids": self._verifier.worker_pids()}

    def close(self) -> None:
        self._verifier.close()


class VerifierPool:
    """`num_workers` verifier actors behind one call: `verify([(gold, response), ...])` -> results in input order.

    `placement`: the role's placement from the controller (actor i, and its replacements, on bundle i). Without
    one, `resources` are plain Ray actor options (e.g. `{"num_cpus": 1}`; default half a CPU per actor, since each
    actor mostly waits on its worker process). Uses the caller's Ray if connected, else starts a local one (and
    shuts it down in `shutdown`).
    """

    def __init__(self, num_workers: int = 2, timeout_s: float = 5.0, resources: dict | None = None,
                 procs_per_worker: int = 1, memory_limit_mb: int = 4096, batch_size: int = 64,
                 placement: RolePlacement | None = None):
        if num_workers < 1 or batch_size < 1:
            raise ValueError("num_workers and batch_size must be >= 1")
        self.timeout_s, self.batch_size = float(timeout_s), batch_size
        self.procs_per_worker = procs_per_worker
        self.restarts = 0  # actors replaced
        self._owns_ray = cluster.ensure_local()
        if placement is not None and placement.plan.count != num_workers:
            raise ValueError(f"the verifier placement has {placement.plan.count} bundles for {num_workers} workers")
        self._placement = placement
        self._options = {"num_cpus": 0.5, **(resources or {})}
        self._actor_cls = ray.remote(VerifierWorker)
        self._actor_args = (self.timeout_s, procs_per_worker, memory_limit_mb)
        self._actors = [self._spawn(i) for i in range(num_workers)]
        self._actor_born = [time.monotonic()] * num_workers
        self.startup = ray.get([a.ready.remote() for a in self._actors])

    @classmethod
    def from_config(cls, cfg: VerifierConfig, placement: RolePlacement | RoleResources | None = None) -> VerifierPool:
        """From `verifier.*`, on the controller's placement (or, used on its own, with a role's resources)."""
        resources = placement.actor_options() if isinstance(placement, RoleResources) else {}
        placed = placement if isinstance(placement, RolePlacement) else None
        return cls(cfg.num_workers, cfg.timeout_s, resources, cfg.procs_per_worker, cfg.memory_limit_mb,
                   cfg.batch_size, placement=placed)

    def _spawn(self, slot: int):
        options = self._placement.actor_options(slot) if self._placement else self._options
        return self._actor_cls.options(max_restarts=0, max_task_retries=0, **options).remote(*self._actor_args)

    @property
    def actors(self) -> list:
        """The live actor handles (tests kill one to check recovery)."""
        return list(self._actors)

    # ------------------------------------------------------------------------------------------ calls
    def verify(self, items: Sequence[tuple[str, str]]) -> list[VerifyResult]:
        payloads = [(str(g), str(r)) for g, r in items]

        def failed(reason: str) -> VerifyResult:
            return VerifyResult(False, None, "error", reason, 0.0)

        return self._map("verify", payloads, failed)

    def check_steps(self, step_lists: Sequence[Sequence[str]]) -> list[int | None]:
        return self._map("check_steps", [list(s) for s in step_lists], lambda reason: None)

    def stats(self) -> list[dict]:
        return ray.get([a.stats.remote() for a in self._actors])

    def shutdown(self) -> None:
        for actor in self._actors:
            try:
                ray.get(actor.close.remote(), timeout=10)
            except (RayError, GetTimeoutError):
                pass
            ray.kill(actor)
        self._actors = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()

    # ------------------------------------------------------------------------------------------ scheduling
    def _map(self, method: str, payloads: list, failed: Callable[[str], Any]) -> list:
        size = self.batch_size
        chunks = [list(range(i, min(i + size, len(payloads)))) for i in range(0, len(payloads), size)]
        results: list = [None] * len(payloads)
        todo = deque(range(len(chunks)))
        retries = [0] * len(chunks)
        in_flight: dict = {}  # ref -> (slot, actor, chunk id, submitted at)
        while todo or in_flight:
            self._fill(method, payloads, chunks, todo, in_flight)
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                slot, actor, cid, _ = in_flight.pop(ref)
                try:
                    out = ray.get(ref)
                except RayError as e:
                    self._replace(slot, actor, f"{type(e).__name__}")
                    retries[cid] += 1
                    if retries[cid] > _MAX_CHUNK_RETRIES:
                        for i in chunks[cid]:
                            results[i] = failed(f"verifier actor died {retries[cid]} times on this batch")
                    else:
                        todo.appendleft(cid)
                    continue
                for i, value in zip(chunks[cid], out):
                    results[i] = value
            self._kill_hung(chunks, in_flight)
        return results

    def _fill(self, method: str, payloads: list, chunks: list, todo: deque, in_flight: dict) -> None:
        load = [0] * len(self._actors)
        for slot, *_ in in_flight.values():
            load[slot] += 1
        for slot, actor in enumerate(self._actors):
            while todo and load[slot] < _IN_FLIGHT_PER_ACTOR:
                cid = todo.popleft()
                ref = getattr(actor, method).remote([payloads[i] for i in chunks[cid]])
                in_flight[ref] = (slot, actor, cid, time.monotonic())
                load[slot] += 1

    def _kill_hung(self, chunks: list, in_flight: dict) -> None:
        """An actor whose chunk overran every per-item timeout back to back (plus startup) is hung: kill it. Its
        refs then fail with RayActorError and are re-sent by `_map`."""
        now = time.monotonic()
        for slot, actor, _cid, submitted in list(in_flight.values()):
            budget = _IN_FLIGHT_PER_ACTOR * self.batch_size * (self.timeout_s + 1.0) + _ACTOR_START_BUDGET_S
            if actor is self._actors[slot] and now - max(submitted, self._actor_born[slot]) > budget:
                log.warning("verifier actor %d unresponsive for %.0fs: killing it", slot, now - submitted)
                ray.kill(actor)

    def _replace(self, slot: int, dead_actor, why: str) -> None:
        if self._actors[slot] is not dead_actor:
            return  # already replaced by an earlier failure of the same actor
        log.warning("verifier actor %d failed (%s): starting a replacement", slot, why)
        try:
            ray.kill(dead_actor)
        except RayError:
            pass
        self._actors[slot] = self._spawn(slot)
        self._actor_born[slot] = time.monotonic()
        self.restarts += 1


def pool_backend(workers: int, timeout_s: float, memory_limit_mb: int):
    """`rayscale verify --ray`: a VerifierPool of `workers` actors as a `rayscale.verify.batch` backend, (verify,
    close). Ray as VerifierPool finds it (a local one it starts is shut down again by close)."""
    pool = VerifierPool(workers, timeout_s, memory_limit_mb=memory_limit_mb)
    return pool.verify, pool.shutdown
