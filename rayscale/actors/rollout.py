"""Rollout workers as Ray actors, and the manager that spreads prompts over them and replaces the ones that die.

`RolloutWorker` is a thin shell around a backend (rayscale.rollout.backends: `hf` or `vllm`) that adds the policy
version. `RolloutManager` owns the workers (one placement-group bundle each, so a restarted worker lands where its
predecessor was) and spreads requests over them (`rollout.dispatch`: as they have room, or in fixed shares).
Weights are pushed to the workers by the controller's coordinator (rayscale.sync.coordinator.WeightSync), which
also catches a restarted worker up (`on_restart`).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import replace

import ray

from rayscale.actors.placement import RolePlacement, actor_location, place_one_role, remove_placement_groups
from rayscale.colocation import ENGINE_PARTS, Holdings
from rayscale.config import RoleResources, RolloutConfig
from rayscale.failures import actor_death_errors, death_cause
from rayscale.rollout.scheduling import Dispatch
from rayscale.types import RolloutRequest, Sample
from rayscale.wire.receiver import SyncError

log = logging.getLogger(__name__)
ACTOR_DEATHS = actor_death_errors()

_NO_WEIGHTS = -1  # version of a worker whose last sync failed half way: it must not generate
MAX_CHUNK_LOSSES = 3  # a chunk whose worker died this many times ends generate with the last death's error


class RolloutWorker:
    def __init__(self, model_path: str, rollout_cfg: RolloutConfig, worker_index: int = 0, dtype: str = "auto",
                 trust_remote_code: bool = False, weight_transfer: str | None = None, colocated: bool = False):
        from rayscale.rollout.backends import make_backend  # torch/vLLM: loaded in the worker process only

        self.index = worker_index
        self.cfg = rollout_cfg
        self.backend = make_backend(model_path, rollout_cfg, worker_index, dtype, trust_remote_code, weight_transfer,
                                    colocated)
        self.version = 0  # the weights in model_path are the learner's starting point: version 0
        self.holdings = Holdings(f"rollout worker {worker_index}", ENGINE_PARTS)  # cluster.colocate's hand-overs

    def ready(self) -> dict:
        return {"index": self.index, "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "ip": ray.util.get_node_ip_address(), "backend": self.cfg.backend, "version": self.version}

    def policy_version(self) -> int:
        return self.version

    def location(self) -> dict:
        return actor_location()

    def sync_ranks(self) -> int:
        return self.backend.sync_ranks

    def generate(self, requests: list[RolloutRequest]) -> list[list[Sample]]:
        if self.version == _NO_WEIGHTS:
            raise SyncError(f"rollout worker {self.index}: its last weight sync failed; sync again before generating")
        self.holdings.require("generate")
        return self.backend.generate(requests, self.version)

    def sleep(self, level: int) -> dict:
        """cluster.colocate: free the engine's device memory for the learner beside it (rayscale.colocation)."""
        self.holdings.release()
        return {**self.backend.sleep(level), **self.holdings.report()}

    def wake_up(self, tags: list[str]) -> dict:
        """Take back `tags` (weights, then kv_cache) of what `sleep` freed."""
        self.holdings.take(tags)
        return {**self.backend.wake_up(tags), **self.holdings.report()}

    def init_sync_group(self, transport, master_addr: str, master_port: int, world_size: int, rank: int,
                        backend: str = "gloo", timeout_s: float = 300.0) -> None:
        """Join the sync group the way `transport` (rayscale.sync.transports, the coordinator's choice) joins."""
        transport.join(self.backend, master_addr, master_port, world_size, rank, backend, timeout_s)

    def close_sync_group(self) -> None:
        self.backend.close_sync_group()

    def receive_weights(self, transport, version: int, payload=None, verify: bool = False) -> dict | None:
        """The receiving half of `transport`: take part in the sender's broadcast (call both at once) or load what
        the senders handed over (`payload`). Until it completes the worker refuses to generate."""
        self.holdings.require("receive weights", ("weights",))
        self.version = _NO_WEIGHTS
        report = transport.receive(self.backend, version, payload, verify)
        self.version = version
        return report

    def get_state_checksum(self) -> dict[str, int]:
        return self.backend.state_checksums()

    def engine_dtype(self) -> str:
        return self.backend.dtype

    def invalidate(self) -> None:
        """Its weights failed the output check: refuse to generate until the next sync."""
        self.version = _NO_WEIGHTS


RolloutWorkerActor = ray.remote(RolloutWorker)


class RolloutManager:
    """`rollout_cfg.num_workers` workers, worker i (and any replacement of it) on bundle i of `placement`: the
    controller's placement of the role. Used on its own (a test, `rayscale eval` tools), it reserves one from
    `resources_cfg` (a bundle per worker, `resources_cfg.strategy` across them) and removes it at shutdown."""

    def __init__(self, model_path: str, rollout_cfg: RolloutConfig, *, resources_cfg: RoleResources | None = None,
                 placement: RolePlacement | None = None, placement_timeout_s: float = 120.0,
                 call_timeout_s: float = 300.0, dtype: str = "auto", trust_remote_code: bool = False,
                 weight_transfer: str | None = None, colocated: bool = False):
        self.model_path, self.cfg = model_path, rollout_cfg
        # weight_transfer: the coordinator's `vllm_weight_transfer`, the vLLM weight-transfer engine each vLLM
        # worker is built with for the vllm_native sync transport (None: not used). colocated: the workers share
        # the learner ranks' bundles (cluster.colocate) and hand their device over (sleep / wake_up)
        self._worker_args = (dtype, trust_remote_code, weight_transfer, colocated)
        self.call_timeout_s = call_timeout_s  # each Ray call to the workers outside generate
        self._owns_placement = placement is None
        self.placement = placement or place_one_role("rollout", rollout_cfg.num_workers,
                                                     resources_cfg or RoleResources(), placement_timeout_s)
        if self.placement.plan.count != rollout_cfg.num_workers:
            raise ValueError(f"the rollout placement has {self.placement.plan.count} bundles for "
                             f"{rollout_cfg.num_workers} workers")
        self.gpus_per_worker = self.placement.plan.bundle.get("GPU", 0.0)
        self._seeds = random.Random(f"{rollout_cfg.seed}:requests")  # seeds for requests that bring none
        self.workers = [self._spawn(i) for i in range(rollout_cfg.num_workers)]
        self.infos = ray.get([w.ready.remote() for w in self.workers])

    # ------------------------------------------------------------------ workers
    def _spawn(self, i: int):
        actor = RolloutWorkerActor.options(**self.placement.actor_options(i))
        return actor.remote(self.model_path, self.cfg, i, *self._worker_args)

    def restart_worker(self, i: int) -> None:
        """Replace worker i (dead or alive). After a sync, `on_restart` gives the new worker the current weights
        before it can generate, from the last sender, which must still hold them (the controller restarts between
        learner steps)."""
        try:
            ray.kill(self.workers[i], no_restart=True)
        except Exception as e:  # noqa: BLE001 - it may be gone already
            log.debug("killing rollout worker %d: %s", i, e)
        for attempt in range(1, 4):
            self.workers[i] = self._spawn(i)
            try:
                self.infos[i] = ray.get(self.workers[i].ready.remote())  # model loading may take long: no timeout
                break
            except ACTOR_DEATHS as e:
                # A host that just died is noticed by the caller at once (its sockets reset) but by Ray only after
                # missed heartbeats: meanwhile the replacement goes to the bundle still placed on that host and is
                # cancelled with it. Once the node is marked dead the bundle moves to a host with room; try again.
                if attempt == 3:
                    raise
                log.warning("replacement of rollout worker %d died before it started (%s); starting it again", i,
                            str(e).splitlines()[0])
        if self.on_restart is not None:  # the weight-sync coordinator catches it up to the current version
            self.on_restart([self.workers[i]])
        log.info("rollout worker %d restarted", i)

    def replace_dead_workers(self, probe_timeout_s: float = 60.0) -> list[int]:
        """Probe every worker; replace the ones that are gone (each catches up to the current weights)."""
        probes = [w.policy_version.remote() for w in self.workers]
        dead = []
        for i, ref in enumerate(probes):
            try:
                ray.get(ref, timeout=probe_timeout_s)
            except (*ACTOR_DEATHS, ray.exceptions.GetTimeoutError):  # killed, out of memory, node lost, stuck
                dead.append(i)
        for i in dead:
            self.restart_worker(i)
        return dead

    # ------------------------------------------------------------------ generation
    def generate(self, requests: list[RolloutRequest],
                 on_chunk: Callable[[list[int], list[list[Sample]]], None] | None = None) -> list[list[Sample]]:
        """Spread requests over the workers (`rollout.dispatch`, decided by rayscale.rollout.scheduling.Dispatch)
        and gather the results in input order; `on_chunk(indices, samples)` gets each chunk's samples as they
        come back (streaming stages grade them while the rest generates). A worker that dies is replaced (with
        the current weights); the chunks it held go back to the queue, for any worker under dynamic dispatch, so
        nothing is lost or doubled. A request without a seed gets one here, from the manager's own sequence: its samples then do not depend
        on the worker that serves it."""
        requests = [r if r.seed is not None else replace(r, seed=self._seeds.getrandbits(62)) for r in requests]
        plan = Dispatch.for_rollout([r.n for r in requests], len(self.workers), self.cfg)
        out: list[list[Sample] | None] = [None] * len(requests)
        pending: dict = {}  # ObjectRef -> (worker, chunk)
        while not plan.done:
            for w, c in plan.assign():
                pending[self.workers[w].generate.remote([requests[i] for i in plan.chunks[c]])] = (w, c)
            ray.wait(list(pending), num_returns=1)  # then take every chunk that is back by now, not just one
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
            for ref in ready:
                if ref not in pending:  # a call of a worker that died earlier in this loop: requeued already
                    continue
                w, c = pending.pop(ref)
                try:
                    results = ray.get(ref)
                except ACTOR_DEATHS as e:  # killed, out of memory, its node lost: replaced the same way
                    self._lost_during_generate(plan, pending, w, e)
                    continue
                if plan.complete(w, c):
                    for i, samples in zip(plan.chunks[c], results):
                        out[i] = samples
                    if on_chunk is not None:
                        on_chunk(plan.chunks[c], results)
        return out  # type: ignore[return-value]

    def _lost_during_generate(self, plan: Dispatch, pending: dict, w: int, error: Exception) -> None:
        """Worker w died: forget its other calls (their chunks are requeued with the one that failed), replace it."""
        log.warning("rollout worker %d died during generate (%s); replacing it", w, death_cause(error))
        for ref in [ref for ref, (worker, _) in pending.items() if worker == w]:
            del pending[ref]
        if any(plan.losses[c] >= MAX_CHUNK_LOSSES for c in plan.lose(w)):
            raise error
        self.restart_worker(w)

    # ------------------------------------------------------------------ colocation (rayscale.colocation.Turns)
    def sleep(self, level: int) -> list[dict]:
        return self._get([w.sleep.remote(level) for w in self.workers])

    def wake_up(self, tags: list[str]) -> list[dict]:
        return self._get([w.wake_up.remote(list(tags)) for w in self.workers])

    # ------------------------------------------------------------------ weight sync: the coordinator's hooks
    # The weights are pushed by the controller's coordinator (rayscale.sync.coordinator.WeightSync), which sets
    # `on_restart`: called with the workers a restart just started, before they generate, to bring them to the
    # current weights (None: nothing was synced, model_path is current).
    on_restart: Callable[[list], None] | None = None

    def _get(self, refs: list):
        return ray.get(refs, timeout=self.call_timeout_s)

    def shutdown(self) -> None:
        for w in self.workers:
            try:
                ray.kill(w, no_restart=True)
            except Exception as e:  # noqa: BLE001 - shutting down: a worker already gone is fine
                log.debug("shutdown: %s", e)
        self.workers = []
        if self._owns_placement:
            remove_placement_groups({"rollout": self.placement})
