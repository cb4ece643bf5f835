"""The sending side of weight sync, as a mixin for the learner's rank actor.

It relies on three things of the class it is mixed into: `self.rank`, `self.bucket_bytes` (the bucket size, given
to the learner once at construction: the same one its ZeRO-3 gathers use), and a generator
`self.iter_params_for_sync(every_rank=False)` yielding `(name, full_tensor)` on rank 0, or on every rank with
`every_rank` (under ZeRO-3 every rank runs it, because gathering a partitioned parameter is a collective).
The coordinator (rayscale.sync.coordinator.WeightSync) calls `send_weights` with the transport object it chose
(rayscale.sync.transports), whose sending half picks one of the primitives here: stream to the group
(`stream_buckets`), bytes for the object store (`packed_bytes`), buckets handed over in place (`shared_buckets`).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterator

import ray
import torch

from rayscale.wire.buckets import Bucket, iter_buckets
from rayscale.wire.group import Backend, SyncGroup, host_store
from rayscale.wire.handover import stamp, to_bytes
from rayscale.wire.protocol import send_stream
from rayscale.wire.receiver import SyncError


class BufferPool:
    """Bucket buffers kept warm between syncs (a fresh 64 MB buffer costs page faults that run slower than the
    link). At most `depth` buffers per dtype: a request beyond that waits for the oldest buffer still on the wire,
    so packing runs ahead of the network by `depth - 1` buckets and no further."""

    def __init__(self, device: torch.device | str, depth: int = 3):
        self.device = torch.device(device)
        self.depth = depth
        self._bufs: dict[torch.dtype, list[torch.Tensor]] = defaultdict(list)
        self._sending: dict[int, object] = {}  # data_ptr -> the work still reading that buffer
        self._handed: set[int] = set()  # being filled or waiting to be sent

    def alloc(self, dtype: torch.dtype, numel: int) -> torch.Tensor:
        fits = [b for b in self._bufs[dtype] if b.numel() >= numel and b.data_ptr() not in self._handed]
        idle = [b for b in fits if self._idle(b)]
        if idle:
            buf = idle[0]
        elif len(self._bufs[dtype]) < self.depth or not fits:
            buf = torch.empty(numel, dtype=dtype, device=self.device)
            self._bufs[dtype].append(buf)
        else:  # all in flight: wait for the one that went out first
            buf = fits[0]
            self._sending.pop(buf.data_ptr()).wait()
        self._handed.add(buf.data_ptr())
        return buf

    def sent(self, bucket: Bucket, work) -> None:
        """`work`: the broadcast reading the bucket (None: it was not sent after all)."""
        ptr = bucket.flat.data_ptr()
        if ptr in self._handed:  # not ours when the bucket is a view of the caller's tensors
            self._handed.discard(ptr)
            if work is None:
                return
            self._sending[ptr] = work
            # keep the pool's list in send order, so fits[0] above is the oldest in flight
            bufs = self._bufs[bucket.flat.dtype]
            bufs.append(bufs.pop(next(i for i, b in enumerate(bufs) if b.data_ptr() == ptr)))

    def release(self, bucket: Bucket) -> None:
        self._handed.discard(bucket.flat.data_ptr())

    def _idle(self, buf: torch.Tensor) -> bool:
        work = self._sending.get(buf.data_ptr())
        if work is not None and not work.is_completed():
            return False
        self._sending.pop(buf.data_ptr(), None)
        return True


class WeightSenderMixin:
    """Mixed into the learner's rank actor; rank 0 sends, the other ranks only take part in ZeRO-3 gathers.

    `sync_zero_copy`: set True when the tensors `iter_params_for_sync` yields stay valid and unchanged until
    `send_weights` returns (ZeRO-0/1/2: they are the parameters themselves, and ZeRO-1/2 lays them out back to back
    in one flat buffer, which then goes on the wire without a copy). Leave it False under ZeRO-3, whose gathered
    tensors are released as the iteration moves on.
    """

    sync_zero_copy: bool = False
    bucket_bytes: int  # set by the host class's constructor
    _sync_group: SyncGroup | None = None
    _sync_store = None
    _sync_pools: dict | None = None
    _shared_buffers: list = []  # the ipc transport's GPU buckets, alive until every worker loaded them
    _wire_cast: torch.dtype | None = None  # the dtype of this sync's floating-point buckets (send_weights)

    def sync_endpoint(self, world_size: int, timeout_s: float = 300.0) -> tuple[str, int]:
        """Rank 0 opens the rendezvous store on its node's IP and an OS-chosen free port, for the workers to join."""
        ip = ray.util.get_node_ip_address()
        self._sync_store = host_store(ip, world_size, timeout_s)
        return ip, self._sync_store.port

    def init_sync_group(self, master_addr: str, master_port: int, world_size: int, backend: Backend = "gloo",
                        timeout_s: float = 300.0) -> None:
        self.close_sync_group()
        store = self._sync_store if self._sync_store is not None and self._sync_store.port == master_port else None
        self._sync_group = SyncGroup.join(master_addr, master_port, world_size, 0, backend, timeout_s, store=store)

    def close_sync_group(self) -> None:
        if self._sync_group is not None:
            self._sync_group.close()
        self._sync_group = None

    def send_weights(self, transport, version: int, verify: bool = False, wire_dtype: str | None = None):
        """The sending half of `transport` (a rayscale.sync.transports object, the coordinator's choice): what it
        returns goes back to the coordinator (a report, object-store refs, in-memory handles). `wire_dtype`: the
        engines' compute dtype when it is narrower than the weights' (bf16, fp16): every floating-point tensor is
        cast into its bucket, half the bytes of fp32 (None: as the weights are)."""
        self._wire_cast = getattr(torch, wire_dtype) if wire_dtype else None
        return transport.send(self, version, verify)

    # ---- what the transports' sending halves use
    def stream_buckets(self, version: int, verify: bool) -> dict | None:
        """Broadcast buckets of `self.bucket_bytes` to the group (rayscale.wire.protocol) and return the report;
        ranks other than 0 return None after taking part in the gathers."""
        params = self.iter_params_for_sync()
        if self.rank != 0:
            for _ in params:
                pass
            return None
        if self._sync_group is None:
            raise RuntimeError("a broadcast sync before init_sync_group")
        device = self._sync_group.device
        pool = self._pool(device)
        plans = self.__dict__.setdefault("_sync_plans", {})
        # The bucket size is fixed at construction; should the layout change anyway, the announced plan
        # fails the sync cleanly on both sides and the coordinator's retry streams the new one.
        key = str(device)
        buckets = iter_buckets(params, self.bucket_bytes, device, pool.alloc, zero_copy=self.sync_zero_copy,
                               cast=self._wire_cast)
        try:
            report = send_stream(self._sync_group, buckets, version, verify, plan=plans.get(key), on_sent=pool.sent)
        except SyncError:
            plans.pop(key, None)  # the layout changed: the next sync streams and learns it again
            raise
        plans[key] = report.plan
        return report.summary()

    def packed_bytes(self, verify: bool, put: Callable) -> list | None:
        """Rank 0's buckets as bytes, each handed to `put(meta_json, raw)` (which must copy it: the buffer is
        reused); returns what `put` returned. Ranks other than 0 return None after taking part in the gathers."""
        params = self.iter_params_for_sync()
        if self.rank != 0:
            for _ in params:
                pass
            return None
        pool = self._pool("cpu")
        out = []
        for bucket in iter_buckets(params, self.bucket_bytes, "cpu", pool.alloc, cast=self._wire_cast):
            out.append(put(*to_bytes(stamp(bucket, verify))))
            pool.release(bucket)
        return out

    def shared_buckets(self, verify: bool) -> Iterator[Bucket]:
        """EVERY rank's buckets on the device its weights live on (the rank's GPU, or the CPU), to be handed over
        in place; GPU buckets stay referenced until `release_shared_weights` (IPC handles point into them)."""
        self.release_shared_weights()
        params = self.iter_params_for_sync(every_rank=True)
        first = next(params, None)
        if first is None:
            return
        held = []
        for bucket in iter_buckets(itertools.chain([first], params), self.bucket_bytes, first[1].device,
                                   zero_copy=self.sync_zero_copy, cast=self._wire_cast):
            if bucket.flat.is_cuda:  # CPU buckets are copied by the hand-over
                held.append(bucket.flat)
            yield stamp(bucket, verify)
        self._shared_buffers = held

    def release_shared_weights(self) -> None:
        self._shared_buffers = []

    def _pool(self, device) -> BufferPool:
        if self._sync_pools is None:
            self._sync_pools = {}
        key = str(torch.device(device))
        if key not in self._sync_pools:
            self._sync_pools[key] = BufferPool(device)
        return self._sync_pools[key]

