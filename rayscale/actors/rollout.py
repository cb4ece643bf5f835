"""Rollout workers as Ray actors, and the manager that spreads prompts over them and keeps their weights current.

`RolloutWorker` is a thin shell around a backend (rayscale.rollout.backends: `hf` or `vllm`) that adds the policy
version. `RolloutManager` owns the workers (one placement-group bundle each, so a restarted worker lands where its
predecessor was), balances requests by sample count, and pushes weights from learner rank 0 to every worker.
"""

from __future__ import annotations

import logging
import os

import ray
from ray.exceptions import RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rayscale.config import RoleResources, RolloutConfig, SyncConfig
from rayscale.rollout.scheduling import balance
from rayscale.sync import output_check
from rayscale.sync.buckets import bucket_from_bytes, checksum
from rayscale.sync.receiver import SyncError
from rayscale.types import RolloutRequest, Sample

log = logging.getLogger(__name__)

_NO_WEIGHTS = -1  # version of a worker whose last sync failed half way: it must not generate


class RolloutWorker:
    def __init__(self, model_path: str, rollout_cfg: RolloutConfig, worker_index: int = 0, dtype: str = "auto",
                 trust_remote_code: bool = False):
        from rayscale.rollout.backends import make_backend

        self.index = worker_index
        self.cfg = rollout_cfg
        self.backend = make_backend(model_path, rollout_cfg, worker_index, dtype, trust_remote_code)
        self.version = 0  # the weights in model_path are the learner's starting point: version 0

    def ready(self) -> dict:
        return {"index": self.index, "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "ip": ray.util.get_node_ip_address(), "backend": self.cfg.backend, "version": self.version}

    def policy_version(self) -> int:
        return self.version

    def sync_ranks(self) -> int:
        return self.backend.sync_ranks

    def generate(self, requests: list[RolloutRequest]) -> list[list[Sample]]:
        if self.version == _NO_WEIGHTS:
            raise SyncError(f"rollout worker {self.index}: its last weight sync failed; sync again before generating")
        return self.backend.generate(requests, self.version)

    def init_sync_group(self, master_addr: str, master_port: int, world_size: int, rank: int, backend: str = "gloo",
                        timeout_s: float = 300.0) -> None:
        self.backend.init_sync_group(master_addr, master_port, world_size, rank, backend, timeout_s)

    def close_sync_group(self) -> None:
        self.backend.close_sync_group()

    def receive_weights(self, version: int, verify: bool = False) -> dict:
        """Broadcast transport: take part in the sender's `send_weights` (call both at once)."""
        self.version = _NO_WEIGHTS
        report = self.backend.receive_weights(version, verify)
        self.version = version
        return report

    def load_weights_from_refs(self, version: int, refs: list, verify: bool = False) -> None:
        """Object-store transport: `refs` is what the sender's `send_weights(transport="object_store")` returned."""
        self.version = _NO_WEIGHTS

        def buckets():
            for meta_json, ref in refs:  # one bucket in memory at a time
                bucket = bucket_from_bytes(meta_json, ray.get(ref))
                if verify and bucket.meta.checksum is not None and checksum(bucket.flat) != bucket.meta.checksum:
                    raise SyncError(f"bucket {bucket.meta.index}: checksum mismatch after the object store")
                yield bucket

        self.backend.load_buckets(buckets())
        self.version = version

    def get_state_checksum(self) -> dict[str, int]:
        return self.backend.state_checksums()

    def engine_dtype(self) -> str:
        return self.backend.dtype

    def invalidate(self) -> None:
        """Its weights failed the output check: refuse to generate until the next sync."""
        self.version = _NO_WEIGHTS


RolloutWorkerActor = ray.remote(RolloutWorker)


def _one_of(error: RayActorError, actors: list) -> bool:
    """Whether the actor that `error` reports dead is one of `actors`."""
    return error.actor_id is not None and error.actor_id in {a._actor_id.hex() for a in actors}


class RolloutManager:
    """Creates `rollout_cfg.num_workers` workers with `resources_cfg` each (a placement-group bundle per worker,
    `resources_cfg.strategy` across them: SPREAD/STRICT_SPREAD put workers on different nodes)."""

    def __init__(self, model_path: str, rollout_cfg: RolloutConfig, sync_cfg: SyncConfig | None = None,
                 resources_cfg: RoleResources | None = None, dtype: str = "auto", trust_remote_code: bool = False):
        self.model_path, self.cfg = model_path, rollout_cfg
        self.sync_cfg = sync_cfg or SyncConfig()
        self.res = resources_cfg or RoleResources()
        self._worker_args = (dtype, trust_remote_code)
        self.version = 0
        self._senders: list = []
        self._group_key: tuple | None = None
        bundle = self.res.bundle()
        self.pg = placement_group([bundle] * rollout_cfg.num_workers, strategy=self.res.strategy)
        try:
            ray.get(self.pg.ready(), timeout=self.sync_cfg.timeout_s)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(self.pg)
            raise RuntimeError(
                f"cannot place {rollout_cfg.num_workers} rollout workers of {bundle} with strategy "
                f"{self.res.strategy}: the cluster has {ray.available_resources()}") from None
        self.workers = [self._spawn(i) for i in range(rollout_cfg.num_workers)]
        self.infos = ray.get([w.ready.remote() for w in self.workers])

    # ------------------------------------------------------------------ workers
    def _spawn(self, i: int):
        actor = RolloutWorkerActor.options(
            **self.res.actor_options(),
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i))
        return actor.remote(self.model_path, self.cfg, i, *self._worker_args)

    def restart_worker(self, i: int) -> None:
        """Replace worker i (dead or alive). The new worker receives the current weights before it can generate,
        from the last sender, which must still hold them (the controller restarts between learner steps)."""
        try:
            ray.kill(self.workers[i], no_restart=True)
        except Exception as e:  # noqa: BLE001 - it may be gone already
            log.debug("killing rollout worker %d: %s", i, e)
        self.workers[i] = self._spawn(i)
        self.infos[i] = ray.get(self.workers[i].ready.remote())  # model loading may take long: no timeout
        self._group_key = None  # the old group has a dead member; rebuilt on the next broadcast sync
        if self.version > 0:
            if not self._senders:
                raise RuntimeError("restarted a worker after a sync but no sender is known")
            self._send_via_object_store(self._senders, self.version, [self.workers[i]])
            if self.sync_cfg.verify:
                self.check_outputs(self._senders, [self.workers[i]])
        log.info("rollout worker %d restarted at policy version %d", i, self.version)

    def replace_dead_workers(self, probe_timeout_s: float = 60.0) -> list[int]:
        """Probe every worker; replace the ones that are gone (each catches up to the current weights)."""
        probes = [w.policy_version.remote() for w in self.workers]
        dead = []
        for i, ref in enumerate(probes):
            try:
                ray.get(ref, timeout=probe_timeout_s)
            except (RayActorError, ray.exceptions.GetTimeoutError):
                dead.append(i)
        for i in dead:
            self.restart_worker(i)
        return dead

    # ------------------------------------------------------------------ generation
    def generate(self, requests: list[RolloutRequest]) -> list[list[Sample]]:
        """Spread requests over the workers (balanced by samples), gather the results in input order. A worker
        that died is replaced (with the current weights) and its share retried once."""
        shards = balance([r.n for r in requests], len(self.workers))
        out: list[list[Sample] | None] = [None] * len(requests)
        pending = {w: self.workers[w].generate.remote([requests[i] for i in idx])
                   for w, idx in enumerate(shards) if idx}
        for w, ref in pending.items():
            try:
                results = ray.get(ref)
            except RayActorError:
                log.warning("rollout worker %d died during generate; replacing it", w)
                self.restart_worker(w)
                results = ray.get(self.workers[w].generate.remote([requests[i] for i in shards[w]]))
            for i, samples in zip(shards[w], results):
                out[i] = samples
        return out  # type: ignore[return-value]

    def policy_versions(self) -> list[int]:
        return self._get([w.policy_version.remote() for w in self.workers])

    # ------------------------------------------------------------------ weight sync
    def sync_from(self, sender, version: int, transport: str | None = None) -> dict:
        """Push the sender's weights to every worker as `version`. `sender` is learner rank 0's actor, or the list
        of all rank actors (rank 0 first) when every rank must take part in the gathers (ZeRO-3)."""
        senders = list(sender) if isinstance(sender, (list, tuple)) else [sender]
        transport = transport or self.sync_cfg.transport
        if transport == "broadcast":
            try:
                report = self._broadcast(senders, version)
            except SyncError as e:  # every member finished the stream: the group is fine, the data was not
                log.warning("weight sync %d failed (%s); retrying once", version, e)
                report = self._broadcast(senders, version)
            except RayActorError as e:  # a worker (or its node) died mid-sync: replace it, sync all again
                if _one_of(e, senders):  # the sending side died: the learner group's failure, not ours to repair
                    raise
                log.warning("a rollout worker died during weight sync %d (%s); replacing it", version, e)
                self._senders = senders
                self.replace_dead_workers()
                report = self._broadcast(senders, version)
        elif transport == "object_store":
            report = self._send_via_object_store(senders, version, self.workers)
        else:
            raise ValueError(f"unknown sync transport {transport!r}; expected broadcast or object_store")
        self.version, self._senders = version, senders
        if self.sync_cfg.verify:
            self.check_outputs(senders, self.workers)
        return report

    def check_outputs(self, senders: list, workers: list) -> None:
        """Every worker generates greedily from the probe prompts; the learner (all ranks: ZeRO-3 forwards are
        collective) scores the same tokens. A worker that disagrees computes with other weights than the
        learner's, whatever its checksums say: it is invalidated and the sync fails (rayscale.sync.output_check)."""
        requests = output_check.probe_requests()
        prompts = [r.prompt for r in requests]
        outputs = self._get([w.generate.remote(requests) for w in workers])
        dtypes = self._get([w.engine_dtype.remote() for w in workers])
        for w, out, dtype in zip(workers, outputs, dtypes):
            tokens = [samples[0].token_ids for samples in out]
            scored = self._get([s.score_greedy.remote(prompts, tokens) for s in senders])[0]
            problems = output_check.disagreements(tokens, scored["scores"],
                                                  output_check.tolerance(dtype, scored["dtype"]))
            if problems:
                self._get([w.invalidate.remote()])
                index = self.workers.index(w)
                raise SyncError(f"rollout worker {index} ({dtype}) does not compute with the learner's weights of "
                                f"version {self.version}: " + "; ".join(problems[:3]))

    def _broadcast(self, senders: list, version: int) -> dict:
        self._ensure_group(senders[0])
        cfg = self.sync_cfg
        recv = [w.receive_weights.remote(version, cfg.verify) for w in self.workers]
        send = [s.send_weights.remote(version, "broadcast", cfg.bucket_bytes, cfg.verify) for s in senders]
        try:
            return self._get(send + recv)[0]
        except SyncError:
            raise
        except Exception:
            self._group_key = None  # a member may be stuck or gone: rebuild the group next time
            # Let the senders' side of the broken broadcast end (gloo fails fast once a peer's socket closes) so
            # a retry does not queue behind it.
            ray.wait(send, num_returns=len(send), timeout=self.sync_cfg.timeout_s)
            raise

    def _send_via_object_store(self, senders: list, version: int, workers: list) -> dict:
        cfg = self.sync_cfg
        refs = self._get([s.send_weights.remote(version, "object_store", cfg.bucket_bytes, cfg.verify)
                          for s in senders])[0]
        self._get([w.load_weights_from_refs.remote(version, refs, cfg.verify) for w in workers])
        return {"version": version, "buckets": len(refs), "transport": "object_store"}

    def _ensure_group(self, sender) -> None:
        key = (sender._actor_id, tuple(w._actor_id for w in self.workers))
        if key == self._group_key:
            return
        self._close_groups(sender)
        ranks = self._get([w.sync_ranks.remote() for w in self.workers])
        world = 1 + sum(ranks)
        backend = self.sync_cfg.resolve_backend(self.res.num_gpus)
        timeout = self.sync_cfg.timeout_s
        ip, port = self._get([sender.sync_endpoint.remote(world, timeout)])[0]
        offsets = [1 + sum(ranks[:i]) for i in range(len(ranks))]
        self._get([sender.init_sync_group.remote(ip, port, world, backend, timeout)]
                  + [w.init_sync_group.remote(ip, port, world, r, backend, timeout)
                     for w, r in zip(self.workers, offsets)])
        self._group_key = key

    def _close_groups(self, sender) -> None:
        holders = {a._actor_id: a for a in [*self.workers, *self._senders[:1], sender]}
        refs = [a.close_sync_group.remote() for a in holders.values()]
        for ref in refs:
            try:
                ray.get(ref, timeout=self.sync_cfg.timeout_s)
            except Exception as e:  # noqa: BLE001 - closing a group with a dead member is best effort
                log.debug("closing a sync group: %s", e)

    def _get(self, refs: list):
        return ray.get(refs, timeout=self.sync_cfg.timeout_s)

    def shutdown(self) -> None:
        for w in self.workers:
            try:
                ray.kill(w, no_restart=True)
            except Exception as e:  # noqa: BLE001 - shutting down: a worker already gone is fine
                log.debug("shutdown: %s", e)
        self.workers = []
        remove_placement_group(self.pg)
