"""Weight sync from learner rank 0 to every rollout worker: flat buckets over a dedicated broadcast group
(gloo or NCCL) or through the Ray object store. See docs/rollout_and_sync.md."""

from rayscale.sync.buckets import Bucket, BucketMeta, BucketPacker, checksum, iter_buckets, unflatten
from rayscale.sync.group import SyncGroup
from rayscale.sync.protocol import SyncReport, receive_all, send_stream
from rayscale.sync.receiver import ModelReceiver, SyncError
from rayscale.sync.sender import WeightSenderMixin

__all__ = [
    "Bucket", "BucketMeta", "BucketPacker", "ModelReceiver", "SyncError", "SyncGroup", "SyncReport",
    "WeightSenderMixin", "checksum", "iter_buckets", "receive_all", "send_stream", "unflatten",
]
