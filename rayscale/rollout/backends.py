"""The rollout backends behind one interface, as the `RolloutWorker` actor drives them.

    generate(requests, version) -> list[list[Sample]]
    sync_ranks                  members this backend adds to the sync group (1; vLLM: one per TP/PP worker)

and the receiving primitives the transports (rayscale.sync.transports) call, each a piece of the Ray-free wire
(rayscale.wire); a backend never asks which transport called:

    init_sync_group(master_addr, master_port, world_size, rank, backend, timeout_s), close_sync_group()
    receive_weights(version, verify) -> SyncReport-like dict      a broadcast over that group
    init_native_transfer(...), receive_native(version, verify)     vLLM only: through vLLM's weight-transfer API
    load_buckets(buckets)                                          buckets handed over in memory
    load_cuda_handles(items, verify)                               CUDA IPC handles of buckets on this GPU
    device                      where its weights live
    state_checksums() -> {name: checksum}
    sleep(level) -> dict, wake_up(tags) -> dict   free / take back device memory (cluster.colocate), with a report
    dtype                       the engine's compute dtype ("float32", "bfloat16", ...), for output checks
"""

from __future__ import annotations

from collections.abc import Iterable

from rayscale.config import RolloutConfig
from rayscale.rollout.hf_engine import HFEngine
from rayscale.rollout.vllm_engine import VLLMEngine
from rayscale.wire.buckets import Bucket, state_checksums
from rayscale.wire.group import Backend, SyncGroup
from rayscale.wire.handover import open_cuda
from rayscale.wire.protocol import receive_all
from rayscale.wire.receiver import ModelReceiver


class HFBackend:
    sync_ranks = 1

    def __init__(self, engine: HFEngine):
        self.engine = engine
        self.receiver = ModelReceiver(engine.model)
        self.group: SyncGroup | None = None

    @property
    def dtype(self) -> str:
        return str(next(self.engine.model.parameters()).dtype).removeprefix("torch.")

    @property
    def device(self):
        return self.engine.device

    def generate(self, requests, version: int):
        return self.engine.generate(requests, version)

    def init_sync_group(self, master_addr: str, master_port: int, world_size: int, rank: int, backend: Backend,
                        timeout_s: float) -> None:
        self.close_sync_group()
        self.group = SyncGroup.join(master_addr, master_port, world_size, rank, backend, timeout_s)

    def close_sync_group(self) -> None:
        if self.group is not None:
            self.group.close()
        self.group = None

    def receive_weights(self, version: int, verify: bool) -> dict:
        if self.group is None:
            raise RuntimeError("receive_weights before init_sync_group")
        device = self.group.device  # gloo receives on CPU; a GPU model then gets a copy (bound only on CPU)
        self.receiver.begin()
        # Every receive is posted at once (max_in_flight=None): the buffers are the model's own, bound last sync.
        report = receive_all(self.group, lambda meta: self.receiver.buffer_for(meta, device), self.receiver.apply,
                             version, verify, max_in_flight=None)
        self.receiver.finish()
        return report.summary()

    def load_cuda_handles(self, items: list, verify: bool) -> None:
        self.load_buckets(open_cuda(meta, handle, self.device, verify) for meta, (_, handle) in items)

    def load_buckets(self, buckets: Iterable[Bucket]) -> None:
        self.receiver.begin()
        device = self.engine.device
        for bucket in buckets:  # object-store memory is read-only and shared: copy into buffers we own
            self.receiver.apply(bucket.meta, self.receiver.buffer_for(bucket.meta, device).copy_(bucket.flat))
        self.receiver.finish()

    def state_checksums(self) -> dict[str, int]:
        return state_checksums(self.engine.model.state_dict().items())

    # ---- cluster.colocate: HF generate keeps no KV cache between calls, so what it can give back is the
    # allocator's cached blocks; its weights stay (the twin serves small models)
    def sleep(self, level: int) -> dict:
        import torch  # local: as everywhere in this module, the backend's own process

        if self.engine.device.type != "cuda":
            return {"slept": False, "reason": "HF generate on the CPU holds no device memory"}
        torch.cuda.empty_cache()
        return {"slept": True, "freed": "cached allocator blocks"}

    def wake_up(self, tags: list[str]) -> dict:
        return {"woke": list(tags)}


def make_backend(model_path: str, cfg: RolloutConfig, worker_index: int = 0, dtype: str = "auto",
                 trust_remote_code: bool = False, weight_transfer: str | None = None, colocated: bool = False):
    """`weight_transfer`: the vLLM weight-transfer engine a vLLM engine is built with (the transport's
    `vllm_weight_transfer`; None: none). `colocated`: the worker shares its device with a learner rank
    (cluster.colocate), so vLLM is built to sleep."""
    if cfg.backend == "hf":
        return HFBackend(HFEngine.from_path(model_path, cfg, dtype, worker_index, trust_remote_code))
    if cfg.backend == "vllm":
        return VLLMEngine(model_path, cfg, worker_index, trust_remote_code, weight_transfer, colocated)
    raise ValueError(f"unknown rollout backend {cfg.backend!r}; expected hf or vllm")
