"""The broadcast wire protocol of one sync.

    [sync header]  {"version", "plan": [bucket metadata...] | null}
    plan known:    [flat 0][flat 1]...[flat n-1]                      then [trailer]
    no plan:       [header 0][flat 0]...[header n-1][flat n-1]       then [trailer]
    [trailer]      {"end": true, "ok", "error", "checksums"}

Each JSON message travels in one fixed-size 64 KiB slot (length-prefixed; a longer one continues in a second
broadcast), so a message is a single collective and a receiver can post it before it is sent.

The first sync streams: headers travel in-band, so the sender packs (and, under ZeRO-3, gathers) bucket k+1 while
bucket k is on the wire, with no planning pass over the model. Every later sync announces the whole plan up front
(the layout the sender packed last time), so receivers post every receive, trailer included, right after reading
the header and then wait once: on a busy CPU every stop to read something costs a thread wake-up, milliseconds.
Should the sender's layout change anyway, it still sends exactly the announced sizes and fails the sync in the
trailer; the next sync streams again. Receivers always consume the stream to its trailer, whatever goes wrong on
their side, so nobody is left blocked in a half-finished collective.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

from rayscale.wire.buckets import Bucket, BucketMeta, checksum, dtype_from_name
from rayscale.wire.group import SyncGroup
from rayscale.wire.receiver import SyncError


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


SLOT_BYTES = 64 << 10


class _Wire:
    """JSON messages over the group, one fixed-size slot each; sent tensors live until their broadcasts finish."""

    def __init__(self, group: SyncGroup):
        self.group = group
        self.pending: list = []

    def send(self, obj: dict) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode()
        slot = torch.zeros(SLOT_BYTES, dtype=torch.uint8)
        slot[:8] = torch.frombuffer(bytearray(len(data).to_bytes(8, "little")), dtype=torch.uint8)
        head = data[: SLOT_BYTES - 8]
        slot[8 : 8 + len(head)] = torch.frombuffer(bytearray(head), dtype=torch.uint8)
        parts = [slot]
        if len(data) > len(head):
            parts.append(torch.frombuffer(bytearray(data[len(head):]), dtype=torch.uint8))
        for part in parts:
            part = part.to(self.group.device)
            self.pending.append((self.group.broadcast(part), part))

    def post(self):
        """Post the receive of the next message's slot; pass the result to `recv`."""
        slot = torch.empty(SLOT_BYTES, dtype=torch.uint8, device=self.group.device)
        return slot, self.group.broadcast(slot)

    def recv(self, posted=None) -> dict:
        slot, work = posted or self.post()
        work.wait()
        slot = slot.cpu()
        size = int.from_bytes(bytes(slot[:8].numpy()), "little")
        data = bytes(slot[8 : 8 + min(size, SLOT_BYTES - 8)].numpy())
        if size > len(data):
            rest = torch.empty(size - len(data), dtype=torch.uint8, device=self.group.device)
            self.group.broadcast(rest).wait()
            data += bytes(rest.cpu().numpy())
        return json.loads(data.decode())

    def flush(self) -> None:
        for work, _ in self.pending:
            work.wait()
        self.pending.clear()


def _scratch(group: SyncGroup, meta: BucketMeta) -> torch.Tensor:
    return torch.empty(meta.numel, dtype=dtype_from_name(meta.dtype), device=group.device)


def send_stream(group: SyncGroup, buckets: Iterable[Bucket], version: int, verify: bool = False,
                plan: list[BucketMeta] | None = None,
                on_sent: Callable[[Bucket, object], None] | None = None) -> SyncReport:
    """Broadcast every bucket from rank 0, all asynchronously; returns once everything is on the other side.
    `plan`: the layout these buckets are expected to have (the previous sync's `report.plan`); None streams
    headers. `on_sent(bucket, work)` lets the bucket's buffer owner wait for `work` before reusing it."""
    report = SyncReport(version, planned=plan is not None)
    start = time.perf_counter()
    wire = _Wire(group)
    wire.send({"version": version, "plan": [m.to_dict() for m in plan] if plan is not None else None})
    works: list = []
    sums: list[int] = []
    error = None
    for bucket in buckets:  # consumed to the end even after an error: under ZeRO-3 every rank gathers in step
        meta = bucket.meta
        if error is None and plan is not None and (len(report.plan) >= len(plan)
                                                   or plan[len(report.plan)].layout_key() != meta.layout_key()):
            error = f"the sender's layout changed at bucket {meta.index} since the previous sync"
        if error is not None:
            if on_sent is not None:
                on_sent(bucket, None)
            continue
        if verify:
            sums.append(checksum(bucket.flat))
        if plan is None:
            wire.send(meta.to_dict())
        work = group.broadcast(bucket.flat)
        works.append((work, bucket))
        if on_sent is not None:
            on_sent(bucket, work)
        report.plan.append(meta)
        report.count(meta)
    if plan is not None:
        if error is None and len(report.plan) != len(plan):
            error = f"the sender packed {len(report.plan)} buckets, {len(plan)} were announced"
        for meta in plan[len(report.plan):]:  # keep the receivers in step: every announced size is sent
            group.broadcast(_scratch(group, meta).zero_()).wait()
    wire.send({"end": True, "ok": error is None, "error": error, "checksums": sums if verify else None})
    for work, _ in works:
        work.wait()
    wire.flush()
    report.seconds = time.perf_counter() - start
    if error is not None:
        raise SyncError(error)
    return report


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
    trailer = trailer_slot = None

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
                if next_post == len(plan) and trailer_slot is None:
                    trailer_slot = wire.post()  # everything is posted: the only wait left is the last one
                meta, flat, work = posted.popleft()
                work.wait()
                if arrived(meta, flat):
                    yield meta, flat
            trailer = wire.recv(trailer_slot)
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
                wire.recv(trailer_slot)
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
