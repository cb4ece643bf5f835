"""Buckets handed over in memory: the `ipc` sync transport (and the object store's, which is its CPU case).

The `ipc` transport: each learner rank hands its weights to the rollout worker in its own bundle
(`cluster.colocate`), so no byte of them crosses a network.

Wire format, per bucket (`rayscale.sync.buckets`: one flat tensor of `bucket_bytes` and its metadata JSON):

    (meta_json, payload)       sent by rank i's `send_weights(transport="ipc")`, loaded by worker i
      CPU bucket: payload = ObjectRef of the bucket's bytes, `ray.put` into the node's shared-memory object
                  store; the worker beside the rank maps the same pages (no socket, no network)
      GPU bucket: payload = ("cuda_ipc", pickled CUDA IPC handle of the bucket, from torch's own reduction);
                  the worker opens the rank's device memory and copies from it on the device

Every rank sends (ZeRO-1/2: each holds the whole policy; ZeRO-3: the gathers are collective anyway), and a rank
keeps its GPU buckets alive until the coordinator says every worker loaded them (`release_shared_weights`): an
IPC handle is only a view of the sender's memory.
"""

from __future__ import annotations

import pickle
from typing import Any

import torch

from rayscale.sync.buckets import Bucket, BucketMeta, bucket_from_bytes, bucket_to_bytes, checksum
from rayscale.sync.receiver import SyncError

CUDA_IPC = "cuda_ipc"


def share(bucket: Bucket, verify: bool) -> tuple[str, Any]:
    """(meta_json, payload) for one bucket; with `verify` the metadata carries the sender's checksum."""
    if verify:
        bucket.meta.checksum = checksum(bucket.flat)
    if bucket.flat.is_cuda:
        from torch.multiprocessing.reductions import reduce_tensor  # torch's own CUDA IPC hand-off

        return bucket.meta.to_json(), (CUDA_IPC, pickle.dumps(reduce_tensor(bucket.flat)))
    import ray  # local: rayscale.sync is also loaded inside vLLM's workers, which must not load Ray

    meta_json, raw = bucket_to_bytes(bucket)
    return meta_json, ray.put(raw)


def is_cuda_handle(payload: Any) -> bool:
    return isinstance(payload, tuple) and len(payload) == 2 and payload[0] == CUDA_IPC


def open_cuda(meta_json: str, handle: bytes, device: torch.device, verify: bool = False) -> Bucket:
    """A bucket copied out of the sender's device memory onto `device` (the same GPU, under colocation)."""
    rebuild, args = pickle.loads(handle)  # torch's rebuild_cuda_tensor and the handle; ours, from share()
    flat = rebuild(*args).to(device, copy=True)  # our own copy: the sender frees its buffer after the sync
    return _checked(Bucket(BucketMeta.from_json(meta_json), flat), verify)


def open_shared(meta_json: str, payload: Any, device: torch.device, verify: bool = False) -> Bucket:
    """The bucket a payload stands for (what `share` made, or an object-store transport's ObjectRef): mapped from
    the object store (CPU) or copied from an IPC handle (GPU); with `verify`, checked against the sender's sum."""
    if is_cuda_handle(payload):
        return open_cuda(meta_json, payload[1], device, verify)
    import ray  # local: as in share()

    return _checked(bucket_from_bytes(meta_json, ray.get(payload)), verify)


def _checked(bucket: Bucket, verify: bool) -> Bucket:
    if verify and bucket.meta.checksum is not None and checksum(bucket.flat) != bucket.meta.checksum:
        raise SyncError(f"bucket {bucket.meta.index}: checksum mismatch after the hand-over")
    return bucket
