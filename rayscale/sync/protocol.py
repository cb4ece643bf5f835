"""The broadcast wire protocol of one sync.

    [sync header]  {"version", "plan": [bucket metadata...] | null}
    plan known:    [flat 0][flat 1]...[flat n-1]                      then [trailer]
    no plan:       [header 0][flat 0]...[header n-1][flat n-1]       then [trailer]
    [trailer]      {"end": true, "ok", "error", "checksums"}

(each JSON object travels as a length broadcast then a bytes broadcast.)

The first sync streams: headers travel in-band, so the sender packs (and, under ZeRO-3, gathers) bucket k+1 while
bucket k is on the wire, with no planning pass over the model. Every later sync announces the whole plan up front
(the layout the sender packed last time), so receivers post all their receives at once and never stop to read a
header between buckets: on a busy CPU each stop costs a thread wake-up, milliseconds per bucket. Should the sender's
layout change anyway, it still sends exactly the announced sizes and fails the sync in the trailer; the next sync
streams again. Receivers always consume the stream to its trailer, whatever goes wrong on their side, so nobody
is left blocked in a half-finished collective.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

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
    planned: bool = False  # the receivers knew the layout up front
    plan: list[BucketMeta] = field(default_factory=list, repr=False)  # what was sent, for the next sync

    def count(self, meta: BucketMeta) -> None:
        self.buckets += 1
        self.tensors += len(meta.entries)
        self.bytes += meta.nbytes

    def summary(self) -> dict:
        return {"version": self.version, "buckets": self.buckets, "tensors": self.tensors, "bytes": self.bytes,
                "seconds": self.seconds, "planned": self.planned}


class _Wire:
    """Small JSON objects over the group; sent tensors are kept alive until their broadcasts finish."""

    def __init__(self, group: SyncGroup):
        self.group = group
        self.pending: list = []

    def send(self, obj: dict) -> None:
        raw = torch.frombuffer(bytearray(json.dumps(obj, separators=(",", ":")).encode()), dtype=torch.uint8)
        length = torch.tensor([raw.numel()], dtype=torch.int64, device=self.group.device)
        body = raw.to(self.group.device)
        self.pending += [(self.group.broadcast(length), length), (self.group.broadcast(body), body)]

    def recv(self) -> dict:
        length = torch.zeros(1, dtype=torch.int64, device=self.group.device)
        self.group.broadcast(length).wait()
        body = torch.empty(int(length.item()), dtype=torch.uint8, device=self.group.device)
        self.group.broadcast(body).wait()
        return json.loads(bytes(body.cpu().numpy()).decode())

    def flush(self) -> None:
        for work, _ in self.pending:
            work.wait()
        self.pending.clear()


def _scratch(group: SyncGroup, meta: BucketMeta) -> torch.Tensor:
    return torch.empty(meta.numel, dtype=dtype_from_name(meta.dtype), device=group.device)


def send_stream(group: SyncGroup, buckets: Iterable[Bucket], version: int, verify: bool = False,
                plan: list[BucketMeta] | None = None, max_in_flight: int = 2,
                on_done: Callable[[Bucket], None] | None = None) -> SyncReport:
    """Broadcast every bucket from rank 0. `plan`: the layout these buckets are expected to have (the previous
    sync's `report.plan`); None streams headers. At most `max_in_flight` buckets are on the wire while the next
    one is packed; `on_done(bucket)` fires once a bucket's buffer may be reused."""
    report = SyncReport(version, planned=plan is not None)
    start = time.perf_counter()
    wire = _Wire(group)
    wire.send({"version": version, "plan": [m.to_dict() for m in plan] if plan is not None else None})
    in_flight: deque[tuple[Bucket, object]] = deque()
    sums: list[int] = []
    error = None
    for bucket in buckets:  # consumed to the end even after an error: under ZeRO-3 every rank gathers in step
        meta = bucket.meta
        if error is None and plan is not None and (len(report.plan) >= len(plan)
                                                   or plan[len(report.plan)].layout_key() != meta.layout_key()):
            error = f"the sender's layout changed at bucket {meta.index} since the previous sync"
        if error is not None:
            continue
        if verify:
            sums.append(checksum(bucket.flat))
        if plan is None:
            wire.send(meta.to_dict())
        in_flight.append((bucket, group.broadcast(bucket.flat)))
        report.plan.append(meta)
        report.count(meta)
        while len(in_flight) >= max_in_flight:
            _retire(in_flight, on_done)
    if plan is not None:
        if error is None and len(report.plan) != len(plan):
            error = f"the sender packed {len(report.plan)} buckets, {len(plan)} were announced"
        for meta in plan[len(report.plan):]:  # keep the receivers in step: every announced size is sent
            group.broadcast(_scratch(group, meta).zero_()).wait()
    wire.send({"end": True, "ok": error is None, "error": error, "checksums": sums if verify else None})
    while in_flight:
        _retire(in_flight, on_done)
    wire.flush()
    report.seconds = time.perf_counter() - start
    if error is not None:
        raise SyncError(error)
    return report


def _retire(in_flight: deque, on_done) -> None:
    bucket, work = in_flight.popleft()
    work.wait()
    if on_done is not None:
        on_done(bucket)


def iter_received(group: SyncGroup, buffer_for: Callable[[BucketMeta], torch.Tensor], version: int,
                  verify: bool = False, report: SyncReport | None = None,
                  max_in_flight: int | None = None) -> Iterator[tuple[BucketMeta, torch.Tensor]]:
    """Yield (meta, received flat tensor) per bucket; `buffer_for(meta)` says where each one is received.

    With a plan, up to `max_in_flight` receives are posted ahead (None: all of them: right when `buffer_for`
    returns persistent buffers). Problems (wrong version, checksum mismatch, a failed sender, a consumer that
    raised or stopped early) are raised only once the trailer has been read.
    """
    report = report if report is not None else SyncReport(version)
    start = time.perf_counter()
    wire = _Wire(group)
    problems: list[str] = []
    sums: list[int] = []
    header = wire.recv()
    if header.get("version") != version:
        problems.append(f"expected weights of version {version}, the sender sent {header.get('version')}")
    plan = [BucketMeta.from_dict(d) for d in header["plan"]] if header.get("plan") is not None else None
    report.planned = plan is not None
    posted: deque[tuple[BucketMeta, torch.Tensor, object]] = deque()
    next_post = 0  # plan mode: index of the next bucket to post
    trailer = None

    def receive_into(meta: BucketMeta) -> torch.Tensor:
        if not problems:
            try:
                return buffer_for(meta)
            except Exception as e:  # noqa: BLE001 - reported with the trailer
                problems.append(f"bucket {meta.index}: no buffer to receive it into: {e}")
        return _scratch(group, meta)

    def post_until(limit: int) -> None:
        nonlocal next_post
        while next_post < min(limit, len(plan)):
            meta = plan[next_post]
            flat = receive_into(meta)
            posted.append((meta, flat, group.broadcast(flat)))
            next_post += 1

    def arrived(meta: BucketMeta, flat: torch.Tensor) -> bool:
        if verify:
            sums.append(checksum(flat))
        report.count(meta)
        return not problems

    try:
        if plan is None:
            while not (obj := wire.recv()).get("end"):
                meta = BucketMeta.from_dict(obj)
                flat = receive_into(meta)
                group.broadcast(flat).wait()
                if arrived(meta, flat):
                    yield meta, flat
            trailer = obj
        else:
            for i in range(len(plan)):
                post_until(len(plan) if max_in_flight is None else i + max_in_flight)
                meta, flat, work = posted.popleft()
                work.wait()
                if arrived(meta, flat):
                    yield meta, flat
            trailer = wire.recv()
    finally:
        if trailer is None:  # the consumer raised or stopped early: consume the rest of the stream
            problems.append("the receiver stopped before the end of the sync")
            if plan is None:
                while not (obj := wire.recv()).get("end"):
                    group.broadcast(_scratch(group, BucketMeta.from_dict(obj))).wait()
            else:
                post_until(len(plan))
                for _, _, work in posted:
                    work.wait()
                wire.recv()
    report.seconds = time.perf_counter() - start
    if not trailer.get("ok"):
        problems.append(f"the sender failed: {trailer.get('error')}")
    want = trailer.get("checksums")
    if verify and want is not None and not problems:
        bad = [i for i, (got, exp) in enumerate(zip(sums, want)) if got != exp]
        if bad or len(sums) != len(want):
            problems.append(f"checksum mismatch in bucket(s) {bad or 'count'} of {len(want)}")
    if problems:
        raise SyncError("; ".join(problems))


def receive_all(group: SyncGroup, buffer_for: Callable[[BucketMeta], torch.Tensor],
                apply: Callable[[BucketMeta, torch.Tensor], None], version: int, verify: bool = False,
                max_in_flight: int | None = None) -> SyncReport:
    """Receive a whole sync, handing each bucket to `apply(meta, flat)`; a SyncError from `apply` is raised
    after the stream has been consumed."""
    report = SyncReport(version)
    errors: list[str] = []
    for meta, flat in iter_received(group, buffer_for, version, verify, report, max_in_flight):
        if errors:
            continue
        try:
            apply(meta, flat)
        except SyncError as e:
            errors.append(str(e))
    if errors:
        raise SyncError("; ".join(errors))
    return report
