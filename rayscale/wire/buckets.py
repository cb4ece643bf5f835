"""Flat per-dtype buckets of named tensors: the unit of weight sync.

A learner's parameters are hundreds of tensors; sending each one costs a collective launch (and, in the pattern
OpenRLHF uses, a Ray round trip). Packing them into a few flat buffers of at most `bucket_bytes` makes a sync a
handful of large transfers that run at the link's bandwidth. Pure torch, no Ray: tested in milliseconds.

A bucket is one flat 1-D tensor of a single dtype plus a small metadata list of (name, shape, offset) entries, so
dtype is preserved exactly and the receiver can unpack by name without knowing the sender's model.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

_DTYPES = {
    name: getattr(torch, name)
    for name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
}


def dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise TypeError(f"cannot sync tensors of dtype {dtype}; supported: {', '.join(_DTYPES)}")
    return name


def dtype_from_name(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise TypeError(f"unknown dtype {name!r} in bucket metadata; supported: {', '.join(_DTYPES)}") from None


@dataclass(frozen=True)
class Entry:
    name: str
    shape: tuple[int, ...]
    offset: int  # in elements, inside the bucket's flat tensor

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class BucketMeta:
    dtype: str
    numel: int
    entries: list[Entry] = field(default_factory=list)
    index: int = 0  # position in the sync's stream
    checksum: int | None = None  # set when the sync verifies

    @property
    def nbytes(self) -> int:
        return self.numel * dtype_from_name(self.dtype).itemsize

    def layout_key(self) -> tuple:
        """What must match for a receiver to reuse the buffer it bound to this bucket last time."""
        return (self.dtype, self.numel, tuple(self.entries))

    def to_dict(self) -> dict:
        entries = [[e.name, list(e.shape), e.offset] for e in self.entries]
        return {"dtype": self.dtype, "numel": self.numel, "entries": entries, "index": self.index,
                "checksum": self.checksum}

    @classmethod
    def from_dict(cls, d: dict) -> BucketMeta:
        entries = [Entry(name, tuple(shape), offset) for name, shape, offset in d["entries"]]
        return cls(d["dtype"], d["numel"], entries, d.get("index", 0), d.get("checksum"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> BucketMeta:
        return cls.from_dict(json.loads(text))


@dataclass
class Bucket:
    meta: BucketMeta
    flat: torch.Tensor  # 1-D, dtype = meta.dtype, exactly meta.numel elements


Allocator = Callable[[torch.dtype, int], torch.Tensor]


def _fresh(device: torch.device | str) -> Allocator:
    return lambda dtype, numel: torch.empty(numel, dtype=dtype, device=device)


@dataclass
class _Open:
    """A bucket being filled: either a buffer we copy into, or (zero-copy) a run of tensors adjacent in memory."""

    meta: BucketMeta
    buf: torch.Tensor | None = None
    run: torch.Tensor | None = None  # first tensor of the run; the bucket is a flat view over its storage

    def run_view(self) -> torch.Tensor:
        return self.run.as_strided((self.meta.numel,), (1,))


class BucketPacker:
    """Streams named tensors into per-dtype buckets of at most `bucket_bytes` (a larger tensor gets its own).

    By default each tensor is copied into its bucket the moment it arrives, so the caller may free or re-shard it
    right after (ZeRO-3 gathers a layer, yields it, releases it). With `zero_copy`, tensors that lie back to back
    in one storage (DeepSpeed ZeRO-1/2 keeps the parameters as views of one flat buffer) become a bucket that is
    a view over that memory: nothing is copied. That is only safe while the tensors stay valid and unchanged
    until the buckets are sent. `alloc` lets a sender reuse warm buffers between syncs. `cast`: floating-point
    tensors are packed in this dtype (an fp32 learner feeding a bf16 engine sends half the bytes); the cast happens
    in the copy into the bucket, which a cast tensor always takes.
    """

    def __init__(self, bucket_bytes: int, device: torch.device | str = "cpu", alloc: Allocator | None = None,
                 zero_copy: bool = False, cast: torch.dtype | None = None):
        if bucket_bytes <= 0:
            raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
        self.bucket_bytes = int(bucket_bytes)
        self.device = torch.device(device)
        self.zero_copy = zero_copy
        self.cast = cast
        self._alloc = alloc or _fresh(self.device)
        self._open: dict[torch.dtype, _Open] = {}
        self._seen: set[str] = set()
        self._count = 0

    def add(self, name: str, tensor: torch.Tensor) -> list[Bucket]:
        """Pack one tensor; returns the buckets this filled (usually none)."""
        if name in self._seen:
            raise ValueError(f"tensor {name!r} was given twice in one sync")
        self._seen.add(name)
        t = tensor.detach()
        dtype, numel = self.cast if self.cast is not None and t.is_floating_point() else t.dtype, t.numel()
        limit = max(1, self.bucket_bytes // dtype.itemsize)
        done: list[Bucket] = []
        if numel >= limit:  # an oversized tensor travels alone
            flat = t.reshape(-1) if self._viewable(t) else self._alloc(dtype, numel)[:numel].copy_(t.reshape(-1))
            done.append(self._emit(flat, BucketMeta(dtype_name(dtype), numel, [Entry(name, tuple(t.shape), 0)])))
            return done
        op = self._open.get(dtype)
        if op is not None and op.meta.numel + numel > limit:
            done.append(self._close(dtype))
            op = None
        if op is None:
            op = self._open[dtype] = _Open(BucketMeta(dtype_name(dtype), 0))
            if self._viewable(t):
                op.run = t
            else:
                op.buf = self._alloc(dtype, limit)
        elif op.run is not None and not self._continues(op, t):  # the run breaks: copy what it holds so far
            op.buf = self._alloc(dtype, limit)
            op.buf[: op.meta.numel].copy_(op.run_view())
            op.run = None
        if op.buf is not None:
            op.buf[op.meta.numel : op.meta.numel + numel].copy_(t.reshape(-1))
        op.meta.entries.append(Entry(name, tuple(t.shape), op.meta.numel))
        op.meta.numel += numel
        return done

    def finish(self) -> list[Bucket]:
        return [self._close(dtype) for dtype in list(self._open)]

    def _viewable(self, t: torch.Tensor) -> bool:
        return (self.zero_copy and t.is_contiguous() and t.device == self.device
                and (self.cast is None or not t.is_floating_point() or t.dtype == self.cast))

    def _continues(self, op: _Open, t: torch.Tensor) -> bool:
        return (self._viewable(t) and t.untyped_storage().data_ptr() == op.run.untyped_storage().data_ptr()
                and t.storage_offset() == op.run.storage_offset() + op.meta.numel)

    def _close(self, dtype: torch.dtype) -> Bucket:
        op = self._open.pop(dtype)
        return self._emit(op.buf[: op.meta.numel] if op.buf is not None else op.run_view(), op.meta)

    def _emit(self, flat: torch.Tensor, meta: BucketMeta) -> Bucket:
        meta.index = self._count
        self._count += 1
        return Bucket(meta, flat)


def iter_buckets(
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    bucket_bytes: int,
    device: torch.device | str = "cpu",
    alloc: Allocator | None = None,
    zero_copy: bool = False,
    cast: torch.dtype | None = None,
) -> Iterator[Bucket]:
    packer = BucketPacker(bucket_bytes, device, alloc, zero_copy, cast)
    for name, tensor in named_tensors:
        yield from packer.add(name, tensor)
    yield from packer.finish()


def unflatten(meta: BucketMeta, flat: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(name, view) pairs into `flat`; views share its memory."""
    if flat.numel() != meta.numel or dtype_name(flat.dtype) != meta.dtype:
        raise ValueError(f"bucket {meta.index}: metadata says {meta.numel} x {meta.dtype}, "
                         f"tensor is {flat.numel()} x {flat.dtype}")
    return [(e.name, flat[e.offset : e.offset + e.numel].view(e.shape)) for e in meta.entries]


_CHECKSUM_WEIGHTS_PERIOD = 65521  # largest prime below 2**16: position weights that catch swapped words


def checksum(tensor: torch.Tensor) -> int:
    """A position-weighted sum of the tensor's bytes, viewed as int32 words, in wrapping int64 arithmetic.

    Integer addition modulo 2**64 is associative, so CPU and GPU agree exactly whatever their reduction order,
    and the sum runs on the tensor's own device (no copy to host for a GPU bucket).
    """
    raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
    pad = (-raw.numel()) % 4
    if pad:
        raw = torch.cat([raw, raw.new_zeros(pad)])
    words = raw.view(torch.int32).to(torch.int64)
    weights = torch.arange(words.numel(), device=words.device, dtype=torch.int64) % _CHECKSUM_WEIGHTS_PERIOD + 1
    return int((words * weights).sum().item())


def state_checksums(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> dict[str, int]:
    return {name: checksum(t) for name, t in named_tensors}


def bucket_to_bytes(bucket: Bucket):
    """(metadata JSON, uint8 numpy view): how a bucket sits in the Ray object store. Raw bytes because numpy has
    no bfloat16, and a uint8 array is stored and read back without pickling."""
    return bucket.meta.to_json(), bucket.flat.view(torch.uint8).numpy()


def bucket_from_bytes(meta_json: str, raw) -> Bucket:
    """Inverse of `bucket_to_bytes`; the flat tensor is a typed view of `raw` (no copy)."""
    meta = BucketMeta.from_json(meta_json)
    with warnings.catch_warnings():  # the object store hands out read-only memory; receivers only read it
        warnings.simplefilter("ignore", UserWarning)
        flat = torch.from_numpy(raw).view(dtype_from_name(meta.dtype))
    return Bucket(meta, flat)
