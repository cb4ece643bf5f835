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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from rayscale.sync.buckets import Bucket, BucketMeta, checksum, dtype_from_name
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


def iter_received(group: SyncGroup, buffer_for: Callable[[BucketMeta], torch.Tensor], version: int,
                  verify: bool = False, report: SyncReport | None = None) -> Iterator[tuple[BucketMeta, torch.Tensor]]:
    """Yield (meta, received flat tensor) per bucket until the end header; `buffer_for(meta)` says where to receive.

    The stream is always consumed to its end header, even when a problem turns up (wrong version, checksum
    mismatch) or the consumer stops early or raises: this member must keep taking part in the sender's
    broadcasts, or everybody would be left blocked in a half-finished collective. Problems are raised at the end.
    """
    report = report if report is not None else SyncReport(version)
    start = time.perf_counter()
    problems: list[str] = []
    finished = False

    def next_header() -> dict:
        length = torch.zeros(1, dtype=torch.int64, device=group.device)
        group.broadcast(length).wait()
        body = torch.empty(int(length.item()), dtype=torch.uint8, device=group.device)
        group.broadcast(body).wait()
        return json.loads(bytes(body.cpu().numpy()).decode())

    def scratch(meta: BucketMeta) -> torch.Tensor:
        return torch.empty(meta.numel, dtype=dtype_from_name(meta.dtype), device=group.device)

    def drain() -> None:
        while not (header := next_header()).get("end"):
            group.broadcast(scratch(BucketMeta.from_dict(header))).wait()

    try:
        while not (header := next_header()).get("end"):
            meta = BucketMeta.from_dict(header)
            if header.get("version") != version:
                problems.append(f"expected weights of version {version}, the sender sent {header.get('version')}")
                group.broadcast(scratch(meta)).wait()
                drain()
                break
            try:
                flat = buffer_for(meta)
            except Exception as e:  # noqa: BLE001 - reported after the stream is consumed
                problems.append(f"bucket {meta.index}: no buffer to receive it into: {e}")
                group.broadcast(scratch(meta)).wait()
                drain()
                break
            group.broadcast(flat).wait()
            if verify and meta.checksum is not None and (got := checksum(flat)) != meta.checksum:
                problems.append(f"bucket {meta.index}: checksum {got} != the sender's {meta.checksum}")
                drain()
                break
            report.buckets += 1
            report.tensors += len(meta.entries)
            report.bytes += meta.nbytes
            yield meta, flat
        finished = True
    finally:
        if not finished and not problems:  # the consumer stopped early or raised: leave the stream in step
            drain()
    report.seconds = time.perf_counter() - start
    if problems:
        raise SyncError("; ".join(problems))


def receive_all(group: SyncGroup, buffer_for: Callable[[BucketMeta], torch.Tensor],
                apply: Callable[[BucketMeta, torch.Tensor], None], version: int, verify: bool = False) -> SyncReport:
    """Receive a whole sync, handing each bucket to `apply(meta, flat)`; returns what arrived."""
    report = SyncReport(version)
    stream = iter_received(group, buffer_for, version, verify, report)
    try:
        for meta, flat in stream:
            apply(meta, flat)
    finally:
        stream.close()  # drains what is left if apply raised
    return report
