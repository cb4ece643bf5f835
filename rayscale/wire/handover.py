"""Buckets handed over in memory (the `ipc` transport and its object-store form): the Ray-free half.

Wire format, per bucket (rayscale.wire.buckets: one flat tensor of `bucket_bytes` and its metadata JSON):

    (meta_json, payload)
      CPU bucket: payload = a Ray ObjectRef of the bucket's bytes in the node's shared-memory object store (put
                  and fetched by the transport, rayscale.sync.transports; the bytes are parsed here)
      GPU bucket: payload = ("cuda_ipc", pickled CUDA IPC handle of the bucket, from torch's own reduction);
                  the receiver opens the sender's device memory and copies from it on the device

With `verify`, the metadata carries the sender's checksum and the receiver checks it after the hand-over. A sender
keeps its GPU buckets alive until every receiver has loaded them: an IPC handle is only a view of its memory.
"""

from __future__ import annotations

import pickle
from typing import Any

import torch

from rayscale.wire.buckets import Bucket, BucketMeta, bucket_from_bytes, bucket_to_bytes, checksum
from rayscale.wire.receiver import SyncError

CUDA_IPC = "cuda_ipc"


def stamp(bucket: Bucket, verify: bool) -> Bucket:
    """With `verify`, the bucket's metadata carries its checksum (the receiver compares after the hand-over)."""
    if verify:
        bucket.meta.checksum = checksum(bucket.flat)
    return bucket


def cuda_handle(bucket: Bucket) -> tuple[str, tuple[str, bytes]]:
    """(meta_json, ("cuda_ipc", handle)) for a GPU bucket."""
    from torch.multiprocessing.reductions import reduce_tensor  # torch's own CUDA IPC hand-off: GPU path only

    return bucket.meta.to_json(), (CUDA_IPC, pickle.dumps(reduce_tensor(bucket.flat)))


def to_bytes(bucket: Bucket):
    """(meta_json, a uint8 numpy array of the bucket's bytes): what a CPU bucket travels as."""
    return bucket_to_bytes(bucket)


def is_cuda_handle(payload: Any) -> bool:
    return isinstance(payload, tuple) and len(payload) == 2 and payload[0] == CUDA_IPC


def open_cuda(meta_json: str, handle: bytes, device: torch.device, verify: bool = False) -> Bucket:
    """A bucket copied out of the sender's device memory onto `device` (the same GPU, under colocation)."""
    rebuild, args = pickle.loads(handle)  # torch's rebuild_cuda_tensor and the handle; ours, from cuda_handle()
    flat = rebuild(*args).to(device, copy=True)  # our own copy: the sender frees its buffer after the sync
    return checked(Bucket(BucketMeta.from_json(meta_json), flat), verify)


def open_bytes(meta_json: str, raw, verify: bool = False) -> Bucket:
    """The bucket that `to_bytes` made (its bytes, read-only shared memory or a copy), checked with `verify`."""
    return checked(bucket_from_bytes(meta_json, raw), verify)


def checked(bucket: Bucket, verify: bool) -> Bucket:
    if verify and bucket.meta.checksum is not None and checksum(bucket.flat) != bucket.meta.checksum:
        raise SyncError(f"bucket {bucket.meta.index}: checksum mismatch after the hand-over")
    return bucket
