"""The rollout backends behind one interface, as the `RolloutWorker` actor drives them: `RolloutBackend`, which
both `rayscale.rollout.hf_engine.HFBackend` (around HF generate) and `rayscale.rollout.vllm_engine.VLLMBackend`
(around a vLLM engine) implement, and `make_backend`, which builds the one `rollout.backend` names.

The receiving primitives are the ones the transports (rayscale.sync.transports) call, each a piece of the Ray-free
wire (rayscale.wire); a backend never asks which transport called. `NativeTransferBackend` adds what only vLLM
offers: a transfer through vLLM's own weight-transfer API (the `vllm_native` transport).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from rayscale.config import RolloutConfig
from rayscale.rollout.hf_engine import HFBackend, HFEngine
from rayscale.rollout.vllm_engine import VLLMBackend
from rayscale.types import RolloutRequest, Sample
from rayscale.wire.buckets import Bucket


class RolloutBackend(Protocol):
    sync_ranks: int  # members this backend adds to the sync group (1; vLLM: one per TP/PP worker)
    dtype: str  # the engine's compute dtype ("float32", "bfloat16", ...), for output checks

    @property
    def device(self) -> Any:
        """The torch.device its weights live on."""

    def generate(self, requests: list[RolloutRequest], version: int) -> list[list[Sample]]:
        """Each request's n samples, stamped with the policy `version` that generated them."""

    def init_sync_group(self, master_addr: str, master_port: int, world_size: int, rank: int, backend: str,
                        timeout_s: float) -> None:
        """Join the learner's sync group as member(s) `rank`.. (the broadcast transport)."""

    def close_sync_group(self) -> None: ...

    def receive_weights(self, version: int, verify: bool) -> dict:
        """Take part in one broadcast over the sync group; a SyncReport-like summary."""

    def load_buckets(self, buckets: Iterable[Bucket]) -> None:
        """Buckets handed over in memory (the object-store transport)."""

    def load_cuda_handles(self, items: list, verify: bool) -> None:
        """CUDA IPC handles of buckets on this GPU (the ipc transport)."""

    def state_checksums(self) -> dict[str, int]: ...

    def sleep(self, level: int) -> dict:
        """Free device memory for a learner rank beside it (cluster.colocate), with a report of what it did."""

    def wake_up(self, tags: list[str]) -> dict: ...


class NativeTransferBackend(RolloutBackend, Protocol):
    def init_native_transfer(self, master_addr: str, master_port: int, world_size: int, rank: int, backend: str,
                             timeout_s: float) -> None: ...

    def receive_native(self, version: int, verify: bool) -> dict: ...


def make_backend(model_path: str, cfg: RolloutConfig, worker_index: int = 0, dtype: str = "auto",
                 trust_remote_code: bool = False, weight_transfer: str | None = None,
                 colocated: bool = False) -> RolloutBackend:
    """`weight_transfer`: the vLLM weight-transfer engine a vLLM engine is built with (the transport's
    `vllm_weight_transfer`; None: none). `colocated`: the worker shares its device with a learner rank
    (cluster.colocate), so vLLM is built to sleep."""
    if cfg.backend == "hf":
        return HFBackend(HFEngine.from_path(model_path, cfg, dtype, worker_index, trust_remote_code))
    if cfg.backend == "vllm":
        return VLLMBackend(model_path, cfg, worker_index, trust_remote_code, weight_transfer, colocated)
    raise ValueError(f"unknown rollout backend {cfg.backend!r}; expected hf or vllm")
