"""The weight-sync coordinator: the controller's, on the sending side, and the only reader of `sync.*`.

    weight_sync = WeightSync(cfg.sync, rollout_gpus=cfg.cluster.rollout.num_gpus)
    learner = LearnerGroup(..., bucket_bytes=weight_sync.bucket_bytes)   # the one bucket size, given once
    rollout = RolloutManager(..., call_timeout_s=weight_sync.timeout_s,
                             weight_transfer=weight_sync.vllm_weight_transfer)  # what vLLM engines are built with
    weight_sync.push(learner.ranks, rollout, version)                     # after every learner step
    weight_sync.close()                                                   # at shutdown

It holds the transport chosen once (rayscale.sync.transports: one object per transport; it never looks at which),
the broadcast group the group transports share (members, key, rebuild, teardown), the retry of a sync that failed
cleanly (`SyncError`: every member finished the stream), the replacement of rollout workers that died during a
sync (through the manager), the catch-up of a restarted worker (the manager's `on_restart` hook, which `push` sets)
and the output check (`sync.verify`, rayscale.sync.output_check). Senders (learner rank actors with
WeightSenderMixin) and receivers (RolloutWorker actors) call the transport object they are handed; the rollout
manager keeps its workers and generation and never reads a sync setting. See docs/rollout_and_sync.md.
"""

from __future__ import annotations

import logging
import time

import ray
from ray.exceptions import RayActorError

from rayscale.config import SyncConfig
from rayscale.sync import output_check
from rayscale.sync.transports import CATCH_UP, Transport, choose, named
from rayscale.wire.receiver import SyncError

log = logging.getLogger(__name__)


class LogprobGapError(SyncError):
    """The engines sample from other weights than the learner's (sync.max_logprob_gap, action stop)."""


def _one_of(error: RayActorError, actors: list) -> bool:
    """Whether the actor that `error` reports dead is one of `actors`."""
    return error.actor_id is not None and error.actor_id in {a._actor_id.hex() for a in actors}


def _death_among(refs: list) -> RayActorError | None:
    """The first RayActorError among finished `refs` (None if none of them reports a dead actor)."""
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
    for ref in ready:
        try:
            ray.get(ref)
        except RayActorError as e:
            return e
        except Exception:  # noqa: BLE001 - another member's failure is not a death
            continue
    return None


class WeightSync:
    """Pushes the learner's weights to a RolloutManager's workers. Every `sync.*` setting is read here, once.

    `rollout_gpus`: GPUs per rollout worker (`sync.backend: auto` picks NCCL when they hold any); `colocated`:
    every worker runs in its learner rank's bundle (`sync.transport: auto` picks ipc). The attributes
    (`transport`, `backend`, `bucket_bytes`, `verify`, `timeout_s`, `vllm_weight_transfer`) are what the rest of
    the run is handed. Whether the config can sync this way was checked when it loaded (Transport.problem)."""

    def __init__(self, cfg: SyncConfig | None = None, rollout_gpus: float = 0.0, colocated: bool = False):
        cfg = cfg or SyncConfig()
        self.transport: Transport = choose(cfg, colocated)
        self.backend: str = cfg.resolve_backend(rollout_gpus)
        self.bucket_bytes: int = cfg.bucket_bytes  # the learner's one bucket size: give it to LearnerGroup
        self.verify: bool = cfg.verify
        self.timeout_s: float = cfg.timeout_s  # group join and each call of a sync
        self.max_logprob_gap, self.logprob_gap_action = cfg.max_logprob_gap, cfg.logprob_gap_action
        # what vLLM rollout engines are built with (RolloutManager(weight_transfer=...)), None for nothing
        self.vllm_weight_transfer: str | None = self.transport.vllm_weight_transfer
        self.version = 0  # what every worker holds (0: the weights in model_path, the learner's starting point)
        self._senders: list = []  # those of the last sync, which still hold `version` between learner steps
        self._group_key: tuple | None = None  # (transport, sender, workers) of the live broadcast group
        self._members: list = []  # actors that may hold a handle of that group
        self._pushing = False
        self._engine_dtypes: dict[tuple, list[str]] = {}  # the workers' compute dtypes, by the workers' ids
        self.last_report: dict = {}  # the last push's report (bytes, seconds, buckets: `rayscale bench` reads it)

    # ------------------------------------------------------------------ the controller's calls
    def push(self, senders, rollout, version: int, transport: str | None = None) -> dict:
        """The senders' weights to every worker of `rollout` (a RolloutManager) as `version`; returns the sync's
        report. `senders`: learner rank 0's actor, or every rank actor (rank 0 first) when every rank must take part
        in the gathers (ZeRO-3; LearnerGroup.ranks always works). `transport`: another registered transport's name
        for this push (tests, benchmarks). A RayActorError naming one of the senders means the learner side died:
        it is raised for the caller (the learner group's failure, not ours to repair)."""
        senders = list(senders) if isinstance(senders, (list, tuple)) else [senders]
        chosen = self.transport if transport is None else named(transport)
        rollout.on_restart = self._restarted
        self._pushing = True  # a worker replaced during the push gets the new weights with everybody else
        try:
            report = chosen.push(self, senders, rollout, version)
        finally:
            self._pushing = False
        report = {**report, "transport": chosen.name}
        self.version, self._senders, self.last_report = version, senders, report
        if self.verify:
            self.check_outputs(senders, rollout.workers, version)
        return report

    def catch_up(self, senders: list, workers: list, version: int) -> None:
        """Bring (re)started `workers` to `version` through the object store, from `senders`, which must still hold
        it; then, with `sync.verify`, check their outputs. The broadcast group is rebuilt around them next push."""
        if not senders:
            raise RuntimeError(f"rollout workers must catch up to policy version {version} but no sender is known")
        CATCH_UP.deliver(self, senders, workers, version)
        if self.verify:
            self.check_outputs(senders, workers, version)

    def check_outputs(self, senders: list, workers: list, version: int) -> None:
        """Every worker generates greedily from the probe prompts; the learner (all ranks: ZeRO-3 forwards are
        collective) scores the same tokens. A worker that disagrees computes with other weights than the
        learner's, whatever its checksums say: it is invalidated and the sync fails (rayscale.sync.output_check)."""
        requests = output_check.probe_requests()
        prompts = [r.prompt for r in requests]
        outputs = self.call([w.generate.remote(requests) for w in workers])
        dtypes = self.call([w.engine_dtype.remote() for w in workers])
        for w, out, dtype in zip(workers, outputs, dtypes):
            tokens = [samples[0].token_ids for samples in out]
            scored = self.call([s.score_greedy.remote(prompts, tokens) for s in senders])[0]
            problems = output_check.disagreements(tokens, scored["scores"],
                                                  output_check.tolerance(dtype, scored["dtype"]))
            if problems:
                self.call([w.invalidate.remote()])
                index = self.call([w.ready.remote()])[0]["index"]
                raise SyncError(f"rollout worker {index} ({dtype}) does not compute with the learner's weights of "
                                f"version {version}: " + "; ".join(problems[:3]))

    def check_logprob_gap(self, gaps: dict, version: int) -> None:
        """`gaps` (rayscale.sync.logprob_gap.gap) of samples of policy `version` against the learner on the same
        weights: above `sync.max_logprob_gap` the engines do not sample from the learner's weights, which names
        the sync that should have brought them (`sync.logprob_gap_action`: raise LogprobGapError, or warn)."""
        limit, measured = self.max_logprob_gap, gaps.get("logprob_gap")
        if limit is None or measured is None or measured <= limit:
            return
        how = (f"weight sync {version} ({self.last_report.get('transport', self.transport.name)}, "
               f"{self.last_report.get('bytes', 0) / 1e6:,.1f} MB)" if version else
               "no weight sync yet: the engines' weights are model_path's")
        message = (f"the rollout engines do not sample from the learner's weights of policy version {version}: "
                   f"their log-probabilities of their own sampled tokens differ from the learner's by "
                   f"{measured:.4g} per token (worst sequence {gaps.get('logprob_gap_max') or 0:.4g}) > "
                   f"sync.max_logprob_gap {limit:g}; {how} did not reach what they compute with. Check the "
                   "transport (sync.transport) and turn on sync.verify to find the worker; raise "
                   "sync.max_logprob_gap if this gap is the engines' numerical noise (bf16: docs/rollout_and_sync.md)")
        if self.logprob_gap_action == "stop":
            raise LogprobGapError(message)
        log.warning("%s", message)

    def close(self, timeout_s: float | None = None) -> None:
        """Tear the broadcast group down (best effort: members may be gone) and forget the last sync, so that the
        next push starts afresh (a restarted learner group and rollout manager). Safe to call twice."""
        if self._members:
            self._close_group(timeout_s=min(self.timeout_s, 30.0) if timeout_s is None else timeout_s)
        self.version, self._senders, self._group_key = 0, [], None

    # ------------------------------------------------------------------ hooks
    def _restarted(self, workers: list) -> None:
        """RolloutManager.on_restart: a replaced worker starts from model_path; bring it to the current version."""
        if self._pushing or self.version == 0:
            return  # during a push the broadcast that follows brings it along; at version 0 it is current
        self.catch_up(self._senders, workers, self.version)

    # ------------------------------------------------------------------ what the transports call
    def recovering(self, send, senders: list, rollout, version: int) -> dict:
        """`send(workers)`, retried once when it failed cleanly (`SyncError`: every member finished, the data was
        wrong), and redone after replacing a worker that died in it."""
        try:
            return send(rollout.workers)
        except SyncError as e:  # every member finished the stream: the group is fine, the data was not
            log.warning("weight sync %d failed (%s); retrying once", version, e)
            return send(rollout.workers)
        except RayActorError as e:  # a worker (or its node) died mid-sync: replace it, sync all again
            if _one_of(e, senders):
                raise
            log.warning("a rollout worker died during weight sync %d (%s); replacing it", version, e)
            rollout.replace_dead_workers()
            return send(rollout.workers)

    def broadcast(self, transport: Transport, senders: list, workers: list, version: int) -> dict:
        """One sync over the group of senders[0] and `workers` (built or rebuilt for `transport`): every worker
        receives through `transport` while every sender sends through it."""
        self._ensure_group(transport, senders[0], workers)
        wire = self.wire_dtype(workers)  # before the receives: a receiving worker answers nothing else
        recv = [w.receive_weights.remote(transport, version, None, self.verify) for w in workers]
        send = [s.send_weights.remote(transport, version, self.verify, wire) for s in senders]
        try:
            return self.call(send + recv)[0]
        except SyncError:
            raise
        except Exception as e:
            self._group_key = None  # a member may be stuck or gone: rebuild the group next time
            # Let the senders' side of the broken broadcast end (gloo fails fast once a peer's socket closes) so
            # a retry does not queue behind it.
            ray.wait(send, num_returns=len(send), timeout=self.timeout_s)
            if isinstance(e, RayActorError):
                raise
            # A worker whose node died mid-stream shows first as the sender's gloo error (its socket was reset).
            # Close the group, so that the receivers still waiting fail now, and raise that worker's death
            # instead: `_recovering` replaces it (seen with a rollout host killed mid-sync, tests/test_multihost).
            self._close_group()
            died = _death_among(recv)
            if died is not None:
                raise died from e
            raise

    def wire_dtype(self, workers: list) -> str | None:
        """What the senders cast floating-point buckets to: the engines' compute dtype when every worker computes
        in the same 16-bit float (half the bytes of fp32, cast where the sender copies anyway); None otherwise
        (fp32 engines keep fp32). Asked once per set of workers."""
        key = tuple(w._actor_id for w in workers)
        if key not in self._engine_dtypes:
            self._engine_dtypes = {key: self.call([w.engine_dtype.remote() for w in workers])}
        dtypes = set(self._engine_dtypes[key])
        return dtypes.pop() if len(dtypes) == 1 and dtypes <= {"bfloat16", "float16"} else None

    def call(self, refs: list):
        return ray.get(refs, timeout=self.timeout_s)

    # ------------------------------------------------------------------ the broadcast group
    def _ensure_group(self, transport: Transport, sender, workers: list) -> None:
        """A group of `sender` (rank 0) and every worker (each with as many ranks as its engine has sync members),
        rebuilt whenever either side changed (a restarted worker, a new learner group) or the transport did (each
        joins its own way: vLLM's weight-transfer engine holds its group, the extension its own)."""
        key = (transport.name, sender._actor_id, tuple(w._actor_id for w in workers))
        if key == self._group_key:
            return
        self._close_group(also=[sender, *workers])
        ranks = self.call([w.sync_ranks.remote() for w in workers])
        world = 1 + sum(ranks)
        ip, port = self.call([sender.sync_endpoint.remote(world, self.timeout_s)])[0]
        offsets = [1 + sum(ranks[:i]) for i in range(len(ranks))]
        self._members = [sender, *workers]
        self.call([sender.init_sync_group.remote(ip, port, world, self.backend, self.timeout_s)]
                  + [w.init_sync_group.remote(transport, ip, port, world, r, self.backend, self.timeout_s)
                     for w, r in zip(workers, offsets)])
        self._group_key = key

    def _close_group(self, also: list = (), timeout_s: float | None = None) -> None:
        holders = {a._actor_id: a for a in [*self._members, *also]}
        refs = [a.close_sync_group.remote() for a in holders.values()]
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        for ref in refs:
            try:
                ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except Exception as e:  # noqa: BLE001 - closing a group with a dead member is best effort
                log.debug("closing a sync group: %s", e)
        self._members, self._group_key = [], None

