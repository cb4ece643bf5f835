"""One object per weight-sync transport: how the learner's buckets reach the rollout workers.

Each transport is one class with the three parts of a sync, and nothing else in rayscale names a transport:

    problem(cfg)                         the capability check, run once when a config loads (rayscale.config):
                                         why this config cannot sync this way, naming the key (None: it can)
    push(coordinator, senders, rollout, version) -> report
                                         the controller's side: which actors to call, in which order, with what
                                         recovery (driven by rayscale.sync.coordinator.WeightSync)
    send(sender, version, verify)        the sending half, in each learner rank actor (WeightSenderMixin)
    join(backend, ...), receive(backend, version, payload, verify)
                                         the receiving half, in each rollout worker (RolloutWorker and its
                                         backend; a vLLM engine hands on to its worker processes)

The classes are registered once (`TRANSPORTS`, by name: the value of `sync.transport`) and chosen once
(`choose`); the coordinator, the sender and the rollout actor hold the chosen object and call it. The objects are
stateless and travel to the actors with each call. The bytes themselves (buckets, the broadcast protocol, the
in-memory hand-over, loading into an HF model or a vLLM worker) are the Ray-free wire, rayscale.wire.

This module is imported by rayscale.config for the capability checks, so it loads neither torch nor Ray at import:
each half imports what it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # annotations only: config imports this module
    from rayscale.config import RayscaleConfig, SyncConfig

TRANSPORTS: dict[str, Transport] = {}


def register(cls: type[Transport]) -> type[Transport]:
    TRANSPORTS[cls.name] = cls()
    return cls


def choose(cfg: SyncConfig, colocated: bool) -> Transport:
    """The transport `sync.transport` names (`auto`: ipc under cluster.colocate, else broadcast)."""
    return named(cfg.resolve_transport(colocated))


def named(name: str) -> Transport:
    """The registered transport called `name`."""
    try:
        return TRANSPORTS[name]
    except KeyError:
        raise ValueError(f"unknown sync transport {name!r}; expected one of {', '.join(TRANSPORTS)}") from None


def problem(cfg: RayscaleConfig) -> str | None:
    """Why `cfg` cannot sync with the transport it chose (None: it can). Called once, by the config's checks."""
    return choose(cfg.sync, cfg.cluster.colocate).problem(cfg)


class Transport:
    name: ClassVar[str]
    # the vLLM weight-transfer engine every vLLM rollout engine is built with for this transport (None: none)
    vllm_weight_transfer: ClassVar[str | None] = None

    @classmethod
    def problem(cls, cfg: RayscaleConfig) -> str | None:
        return None

    def push(self, coordinator, senders: list, rollout, version: int) -> dict:
        """Every worker of `rollout` to `version`; a clean failure (SyncError) is retried once and a worker that
        died is replaced and the sync redone (coordinator.recovering)."""
        return coordinator.recovering(lambda workers: self.deliver(coordinator, senders, workers, version),
                                      senders, rollout, version)

    def deliver(self, coordinator, senders: list, workers: list, version: int) -> dict:
        raise NotImplementedError

    def send(self, sender, version: int, verify: bool) -> Any:
        raise NotImplementedError

    def join(self, backend, master_addr: str, master_port: int, world_size: int, rank: int, group_backend: str,
             timeout_s: float) -> None:
        raise NotImplementedError(f"the {self.name} transport builds no group")

    def receive(self, backend, version: int, payload: Any, verify: bool) -> dict | None:
        raise NotImplementedError

    def __reduce__(self):  # travels to the actors by name: the receiving process has the same registry
        return named, (self.name,)

    def __repr__(self) -> str:
        return f"<{self.name} transport>"


@register
class BroadcastTransport(Transport):
    """A process group of learner rank 0 and every worker (every tensor-parallel vLLM worker process a member of
    its own), gloo or NCCL (`sync.backend`), built and kept by the coordinator; buckets broadcast from rank 0
    (rayscale.wire.protocol), received by the backend's own receiver (HF module, vLLM worker extension)."""

    name = "broadcast"

    def deliver(self, coordinator, senders: list, workers: list, version: int) -> dict:
        return coordinator.broadcast(self, senders, workers, version)

    def send(self, sender, version: int, verify: bool) -> dict | None:
        return sender.stream_buckets(version, verify)

    def join(self, backend, master_addr, master_port, world_size, rank, group_backend, timeout_s) -> None:
        backend.init_sync_group(master_addr, master_port, world_size, rank, group_backend, timeout_s)

    def receive(self, backend, version: int, payload: Any, verify: bool) -> dict:
        return backend.receive_weights(version, verify)


@register
class VLLMNativeTransport(BroadcastTransport):
    """The broadcast's group and buckets, received through vLLM's own weight-transfer API
    (`init_weight_transfer_engine`, `start_weight_update`, `update_weights`, `finish_weight_update`) by the engine
    rayscale registers with vLLM (rayscale.rollout.vllm_transfer). vLLM's built-in `nccl`/`ipc` engines are
    refused: they need CUDA (elsewhere vLLM's NCCL transfer silently does nothing, vLLM issue #57022) and their
    sending side is vLLM's trainer engine, which a rayscale learner does not run."""

    name = "vllm_native"
    vllm_weight_transfer = "rayscale"  # rayscale.rollout.vllm_extension.ENGINE_NAME
    NATIVE_BACKENDS: ClassVar[dict[str, str]] = {"auto": "rayscale", "rayscale": "rayscale"}

    @classmethod
    def problem(cls, cfg: RayscaleConfig) -> str | None:
        if cfg.rollout.backend != "vllm":
            return (f"sync.transport: {cls.name} syncs through vLLM's weight-transfer API; it needs rollout.backend: "
                    f"vllm (not {cfg.rollout.backend}), or use sync.transport: broadcast")
        engine = cfg.sync.native_backend
        if engine not in cls.NATIVE_BACKENDS:
            where = ("the rollout workers hold no GPU (cluster.rollout.num_gpus: 0), and on a non-CUDA platform "
                     "vLLM's transfer silently does nothing (vLLM issue #57022)" if cfg.cluster.rollout.num_gpus <= 0
                     else "its sending side is vLLM's trainer engine, which rayscale's learner does not run")
            return (f"sync.native_backend: {engine} cannot sync here: {where}. Use sync.native_backend: rayscale "
                    "(or auto): rayscale's buckets through vLLM's weight-transfer API, over sync.backend (gloo, or "
                    "nccl between GPUs)")
        return None

    def join(self, backend, master_addr, master_port, world_size, rank, group_backend, timeout_s) -> None:
        backend.init_native_transfer(master_addr, master_port, world_size, rank, group_backend, timeout_s)

    def receive(self, backend, version: int, payload: Any, verify: bool) -> dict:
        return backend.receive_native(version, verify)


@register
class IPCTransport(Transport):
    """cluster.colocate: every learner rank hands its buckets to the rollout worker in its own bundle, in memory
    (rayscale.wire.handover): on a CPU through the node's shared-memory object store, on a GPU as CUDA IPC
    handles. Every rank sends; a rank keeps its GPU buckets until every worker loaded them."""

    name = "ipc"

    @classmethod
    def problem(cls, cfg: RayscaleConfig) -> str | None:
        if not cfg.cluster.colocate:
            return (f"sync.transport: {cls.name} hands each learner rank's weights to the rollout worker in its own "
                    "bundle through shared memory; it needs cluster.colocate: true (or use broadcast)")
        return None

    def deliver(self, coordinator, senders: list, workers: list, version: int) -> dict:
        if len(senders) != len(workers):
            raise ValueError(f"sync.transport {self.name} pairs learner rank i with rollout worker i: {len(senders)} "
                             f"sender(s) for {len(workers)} worker(s); pass every rank (LearnerGroup.ranks)")
        shared = coordinator.call([s.send_weights.remote(self, version, coordinator.verify, coordinator.wire_dtype(workers)) for s in senders])
        try:
            coordinator.call([w.receive_weights.remote(self, version, items, coordinator.verify)
                              for w, items in zip(workers, shared)])
        finally:  # the senders' GPU buckets lived on for the handles only
            coordinator.call([s.release_shared_weights.remote() for s in senders])
        return self.report(version, shared[0])

    def send(self, sender, version: int, verify: bool) -> list:
        from rayscale.wire.handover import cuda_handle, to_bytes  # torch: see the module docstring

        out = []
        for bucket in sender.shared_buckets(verify):
            out.append(cuda_handle(bucket) if bucket.flat.is_cuda else self._put(*to_bytes(bucket)))
        return out

    def receive(self, backend, version: int, items: list, verify: bool) -> None:
        from rayscale.wire.handover import is_cuda_handle  # torch: see the module docstring

        if items and is_cuda_handle(items[0][1]):
            backend.load_cuda_handles(items, verify)  # a vLLM engine opens them in its worker processes
        else:
            backend.load_buckets(self._fetched(meta, ref, verify) for meta, ref in items)  # one bucket at a time

    @staticmethod
    def _put(meta_json: str, raw) -> tuple[str, Any]:
        import ray  # ray: only the sending actor runs this; config imports this module without Ray

        return meta_json, ray.put(raw)

    @staticmethod
    def _fetched(meta_json: str, ref, verify: bool):
        import ray  # ray: only the receiving actor runs this, as above

        from rayscale.wire.handover import open_bytes  # torch: see the module docstring

        return open_bytes(meta_json, ray.get(ref), verify)

    def report(self, version: int, items: list) -> dict:
        """The report of a sync whose buckets went as [(metadata JSON, payload)] (one rank's)."""
        from rayscale.wire.buckets import BucketMeta  # torch: see the module docstring

        nbytes = sum(BucketMeta.from_json(meta).nbytes for meta, _ in items)
        return {"version": version, "buckets": len(items), "bytes": nbytes, "transport": self.name}


@register
class ObjectStoreTransport(IPCTransport):
    """The ipc transport's CPU form for any placement: rank 0's buckets as bytes through the Ray object store
    (across nodes through Ray's object manager), received like ipc's. Slower than a broadcast (every byte is
    copied in and out of the store), but needs no group: it also catches up a restarted worker."""

    name = "object_store"

    @classmethod
    def problem(cls, cfg: RayscaleConfig) -> str | None:
        return None

    def push(self, coordinator, senders: list, rollout, version: int) -> dict:
        return self.deliver(coordinator, senders, rollout.workers, version)

    def deliver(self, coordinator, senders: list, workers: list, version: int) -> dict:
        refs = coordinator.call([s.send_weights.remote(self, version, coordinator.verify, coordinator.wire_dtype(workers)) for s in senders])[0]
        coordinator.call([w.receive_weights.remote(self, version, refs, coordinator.verify) for w in workers])
        return self.report(version, refs)

    def send(self, sender, version: int, verify: bool) -> list | None:
        return sender.packed_bytes(verify, self._put)  # rank 0's; the other ranks only take part in gathers


CATCH_UP = TRANSPORTS[ObjectStoreTransport.name]  # a restarted worker is in no group: it catches up this way
