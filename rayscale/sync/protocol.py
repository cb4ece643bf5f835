"""The broadcast wire protocol: each bucket is announced by a small JSON header, then sent as one flat tensor.

    [header length][header bytes][flat bucket] ... [header length][end header]

Headers travel in-band so the sender can stream: it packs (and, under ZeRO-3, gathers) bucket k+1 while bucket k
is on the wire, and no planning pass over the model is needed before the first byte moves. Two tiny broadcasts
per bucket cost microseconds against a bucket of tens of MB.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from rayscale.sync.buckets import Bucket, BucketMeta, checksum
from rayscale.sync.group import SyncGroup
from rayscale.sync.receiver import SyncError


@dataclass
class SyncReport:
    version: int
    buckets: int = 0
    tensors: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


def _encode(obj: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    raw = torch.frombuffer(bytearray(json.dumps(obj, separators=(",", ":")).encode()), dtype=torch.uint8)
    return torch.tensor([raw.numel()], dtype=torch.int64, device=device), raw.to(device)


def send_stream(group: SyncGroup, buckets: Iterable[Bucket], version: int, verify: bool = False,
                max_in_flight: int = 2, on_done: Callable[[Bucket], None] | None = None) -> SyncReport:
    """Broadcast every bucket (rank 0). At most `max_in_flight` buckets are on the wire while the next is packed;
    `on_done(bucket)` fires once a bucket's buffer may be reused."""
    report = SyncReport(version)
    start = time.perf_counter()
    # (bucket, works, header tensors): the header tensors must outlive their asynchronous broadcasts.
    in_flight: deque[tuple[Bucket, list, tuple]] = deque()

    def retire_oldest() -> None:
        bucket, works, _ = in_flight.popleft()
        for w in works:
            w.wait()
        if on_done is not None:
            on_done(bucket)

    for bucket in buckets:
        if verify:
            bucket.meta.checksum = checksum(bucket.flat)
        length, body = _encode({**bucket.meta.to_dict(), "version": version}, group.device)
        works = [group.broadcast(length), group.broadcast(body), group.broadcast(bucket.flat)]
        in_flight.append((bucket, works, (length, body)))
        report.buckets += 1
        report.tensors += len(bucket.meta.entries)
        report.bytes += bucket.meta.nbytes
        while len(in_flight) >= max_in_flight:
            retire_oldest()
    length, body = _encode({"end": True, "version": version, "buckets": report.buckets}, group.device)
    end_works = [group.broadcast(length), group.broadcast(body)]
    while in_flight:
        retire_oldest()
    for w in end_works:
        w.wait()
    report.seconds = time.perf_counter() - start
    return report


def receive_all(group: SyncGroup, buffer_for: Callable[[BucketMeta], torch.Tensor],
                apply: Callable[[BucketMeta, torch.Tensor], None], version: int, verify: bool = False) -> SyncReport:
    """Receive buckets until the end header, handing each to `apply(meta, flat)`; `buffer_for(meta)` says where
    to receive it.

    A problem found mid-stream (wrong version, checksum mismatch, a name the model lacks) is raised only after the
    end header: this member keeps consuming the sender's broadcasts, so nobody is left blocked in a collective.
    """
    report = SyncReport(version)
    start = time.perf_counter()
    problems: list[str] = []
    while True:
        length = torch.zeros(1, dtype=torch.int64, device=group.device)
        group.broadcast(length).wait()
        body = torch.empty(int(length.item()), dtype=torch.uint8, device=group.device)
        group.broadcast(body).wait()
        header = json.loads(bytes(body.cpu().numpy()).decode())
        if header.get("version") != version and not problems:
            problems.append(f"expected weights of version {version}, the sender sent version {header.get('version')}")
        if header.get("end"):
            break
        meta = BucketMeta.from_dict(header)
        flat = buffer_for(meta)
        group.broadcast(flat).wait()
        if problems:
            continue
        if verify and meta.checksum is not None and (got := checksum(flat)) != meta.checksum:
            problems.append(f"bucket {meta.index}: checksum {got} != the sender's {meta.checksum}")
            continue
        try:
            apply(meta, flat)
        except SyncError as e:
            problems.append(str(e))
        report.buckets += 1
        report.tensors += len(meta.entries)
        report.bytes += meta.nbytes
    if problems:
        raise SyncError("; ".join(problems))
    report.seconds = time.perf_counter() - start
    return report
