"""Mixed into every vLLM worker process through `worker_extension_cls` (see vllm_engine.py).

vLLM builds its worker class as `type(..., (Worker, SyncWorkerExtension), ...)`, so `self` here is a vLLM GPU
worker: `self.model_runner`, `self.parallel_config`, `self.device` are vLLM's. Nothing imports vLLM at module
level, so rayscale imports this module without vLLM installed.
"""

from __future__ import annotations

import torch

from rayscale.sync.buckets import BucketMeta, dtype_from_name, state_checksums, unflatten
from rayscale.sync.group import SyncGroup
from rayscale.sync.protocol import SyncReport, iter_received


class SyncWorkerExtension:
    _rayscale_group: SyncGroup | None = None

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
            # two buckets in flight: fresh buffers, so bound the extra GPU memory to two buckets
            for meta, flat in iter_received(group, fresh, version, verify, report, max_in_flight=2):
                yield from unflatten(meta, flat.to(self.device, non_blocking=True))

        self._rayscale_reload(named())
        return report.summary()

    def rayscale_load_buckets(self, buckets: list[tuple[str, torch.Tensor]]) -> None:
        def named():
            for meta_json, flat in buckets:
                yield from unflatten(BucketMeta.from_json(meta_json), flat.to(self.device))

        self._rayscale_reload(named())

    def rayscale_state_checksums(self) -> dict[str, int]:
        return state_checksums(self.model_runner.get_model().state_dict().items())

    def _rayscale_reload(self, weights) -> None:
        reload = getattr(self.model_runner, "reload_weights", None)
        if reload is not None:  # vLLM >= 0.2x: in-place reload with layerwise post-processing (quantized models)
            reload(weights_iterator=weights)
        else:
            self.model_runner.get_model().load_weights(weights=weights)
        torch.cuda.synchronize()
