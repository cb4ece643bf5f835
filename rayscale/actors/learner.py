"""DeepSpeed learner group on Ray: N rank actors in one placement group forming one torch.distributed group.

The per-rank logic lives in rayscale.learner.engine (plain Python); this module places the ranks, wires their
rendezvous, validates batches before any rank sees them, and turns a rank failure into an error instead of a hang.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import ray

from rayscale.actors.placement import RolePlacement, actor_location, place_one_role, remove_placement_groups
from rayscale.algos.batching import pair_text_size, sft_text_size, shard_evenly, validate_pairs, validate_sft
from rayscale.config import DEFAULT_BUCKET_BYTES, AlgoConfig, LearnerConfig, RoleResources
from rayscale.failures import death_cause
from rayscale.learner.engine import LearnerEngine
from rayscale.sync.sender import WeightSenderMixin
from rayscale.types import PreferencePair, SFTExample

logger = logging.getLogger(__name__)


class LearnerRank(WeightSenderMixin, LearnerEngine):
    """The rank actor class (wrapped with ray.remote by LearnerGroup); rank 0 also sends weights to rollout workers."""

    @property
    def sync_zero_copy(self) -> bool:
        # ZeRO-0/1/2 parameters are the live tensors, untouched while a sync runs; ZeRO-3's gathered copies are not.
        return self.cfg.zero_stage < 3

    def node_ip(self) -> str:
        return ray.util.get_node_ip_address()

    def location(self) -> dict:
        return actor_location()


class LearnerGroupError(RuntimeError):
    """A rank died, or failed while the others were still inside a collective; the group was shut down.
    `cause`: why the rank died, when Ray says (out of memory, a signal, its node), for the run's final message."""

    def __init__(self, message: str, cause: str | None = None):
        super().__init__(message)
        self.cause = cause


class LearnerGroup:
    def __init__(self, model_path: str, learner_cfg: LearnerConfig, algo_cfg: AlgoConfig,
                 resources_cfg: RoleResources, ref_model_path: str | None = None, *,
                 rank_cls: type = LearnerRank, placement: RolePlacement | None = None,
                 placement_timeout_s: float = 120.0, failure_grace_s: float = 30.0,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES, trust_remote_code: bool = False):
        """Rank i on bundle i of `placement` (the controller's placement of the role); without one (a test, a
        benchmark) the group reserves its own from `resources_cfg` and removes it at shutdown. `bucket_bytes`:
        the one bucket size of every rank (weight sync, ZeRO-3 gathers for export, checkpoint and reference
        copies), the coordinator's (`WeightSync.bucket_bytes`) in a run."""
        self.cfg, self.algo, self.resources = learner_cfg, algo_cfg, resources_cfg
        self.num_ranks = learner_cfg.num_ranks
        self.failure_grace_s = failure_grace_s
        self.device = _resolve_device(learner_cfg, resources_cfg)
        self._owns_placement = placement is None
        self.placement = placement or place_one_role("learner", self.num_ranks, resources_cfg, placement_timeout_s)
        if self.placement.plan.count != self.num_ranks:
            raise ValueError(f"the learner placement has {self.placement.plan.count} bundles for {self.num_ranks} ranks")
        actor_cls = ray.remote(rank_cls)
        self.ranks = [
            actor_cls.options(**self.placement.actor_options(i)).remote(
                i, self.num_ranks, model_path, learner_cfg.model_dump(), algo_cfg.model_dump(), ref_model_path,
                self.device, trust_remote_code=trust_remote_code, bucket_bytes=bucket_bytes)
            for i in range(self.num_ranks)
        ]
        try:
            ips = self._call_all("node_ip")
            self.master_addr = ips[0]
            self.master_port = ray.get(self.ranks[0].create_store.remote(self.master_addr))
            local_ranks = [ips[:i].count(ip) for i, ip in enumerate(ips)]
            self.info = self._call_all("init", per_rank=[(self.master_addr, self.master_port, lr)
                                                         for lr in local_ranks])
        except BaseException:
            self._kill()
            raise

    # ------------------------------------------------------------------------------------------- training
    def train_dpo(self, pairs: Sequence[PreferencePair]) -> dict[str, float]:
        """One optimizer step over the whole batch; metrics reduced over ranks (see docs/learner.md)."""
        validate_pairs(pairs, self.num_ranks)
        shards = shard_evenly(list(pairs), self.num_ranks, pair_text_size)
        return self._call_all("train_dpo", per_rank=[(shard, len(pairs)) for shard in shards])[0]

    def score_tokens(self, contexts: list[tuple[str, str]], continuations: list[list[int]]) -> list[list[float]]:
        """The policy's log-probabilities of engine-sampled tokens (rayscale.sync.logprob_gap), every rank."""
        return self._call_all("score_tokens", contexts, continuations)[0]

    def train_sft(self, examples: Sequence[SFTExample]) -> dict[str, float]:
        validate_sft(examples, self.num_ranks)
        shards = shard_evenly(list(examples), self.num_ranks, sft_text_size)
        return self._call_all("train_sft", per_rank=[(shard,) for shard in shards])[0]

    # ------------------------------------------------------------------------------------------- state
    def set_reference_from_policy(self) -> None:
        self._call_all("set_reference_from_policy")

    def save_checkpoint(self, ckpt_dir: str) -> None:
        self._call_all("save_checkpoint", str(ckpt_dir))

    def load_checkpoint(self, ckpt_dir: str) -> dict[str, Any]:
        return self._call_all("load_checkpoint", str(ckpt_dir))[0]

    def export_hf(self, out_dir: str) -> None:
        self._call_all("export_hf", str(out_dir))

    def memory(self) -> list[dict[str, int]]:
        """Per rank, in rank order: resident and peak process memory (bytes; benchmarks/learner_vs_trl.py)."""
        return self._call_all("memory")

    # ------------------------------------------------------------------------------------------- colocation
    def offload(self, parts: list[str]) -> list[dict[str, Any]]:
        """cluster.colocate (rayscale.colocation.Turns): every rank gives `parts` of its device memory up."""
        return self._call_all("offload", list(parts))

    def reload(self) -> list[dict[str, Any]]:
        return self._call_all("reload")

    def shutdown(self) -> None:
        if not self.ranks:
            return
        try:
            ray.get([r.shutdown.remote() for r in self.ranks], timeout=60)
        except ray.exceptions.RayError as err:  # tearing down anyway: the actors are killed next
            logger.warning("learner ranks did not shut down cleanly: %s", err)
        self._kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # ------------------------------------------------------------------------------------------- plumbing
    def _call_all(self, method: str, *args, per_rank: list[tuple] | None = None) -> list[Any]:
        """Call `method` on every rank; results in rank order. When a rank fails, the others get `failure_grace_s`
        to finish (ranks that agreed on the failure raise together); any still running are stuck in a collective,
        so the group is killed rather than left to hang."""
        if not self.ranks:
            raise LearnerGroupError("the learner group was shut down")
        refs = [getattr(r, method).remote(*(per_rank[i] if per_rank else args)) for i, r in enumerate(self.ranks)]
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except Exception as err:
                rank = refs.index(done[0])
                died = death_cause(err)  # out of memory, a signal, its node: each kind of death, not just ray.kill
                _, stuck = ray.wait(pending, num_returns=len(pending), timeout=self.failure_grace_s)
                if stuck:
                    self._kill()
                    raise LearnerGroupError(f"learner rank {rank} {'died (' + died + ')' if died else 'failed'} in "
                                            f"{method} while {len(stuck)} other rank(s) waited in a collective; the "
                                            "group was shut down", cause=died) from err
                if died:  # a rank (or its node) is gone: so is the group
                    self._kill()
                    raise LearnerGroupError(f"learner rank {rank} died in {method} ({died}); the group was shut "
                                            "down", cause=died) from err
                raise
        return ray.get(refs)

    def _kill(self) -> None:
        for r in self.ranks:
            ray.kill(r)
        self.ranks = []
        if self._owns_placement and self.placement is not None:
            remove_placement_groups({"learner": self.placement})
            self.placement = None


def _resolve_device(cfg: LearnerConfig, resources: RoleResources) -> str:
    if cfg.device == "auto":
        return "cuda" if resources.num_gpus > 0 else "cpu"
    return cfg.device  # learner.device=cuda without cluster.learner.num_gpus: refused at load (rayscale.validation)
