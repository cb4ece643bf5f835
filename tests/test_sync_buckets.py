"""Bucket packing, checksums and applying buckets to a module: pure torch, no Ray, milliseconds."""

from __future__ import annotations

import pytest
import torch

from rayscale.wire.buckets import (
    BucketPacker,
    bucket_from_bytes,
    bucket_to_bytes,
    checksum,
    iter_buckets,
    state_checksums,
    unflatten,
)
from rayscale.wire.receiver import ModelReceiver, SyncError


def _named():
    g = torch.Generator().manual_seed(0)
    return [
        ("a", torch.randn(10, 3, generator=g)),
        ("b", torch.randn(7, generator=g).to(torch.bfloat16)),
        ("c", torch.randint(0, 100, (4, 2), generator=g)),
        ("d", torch.randn(5, 5, generator=g)),
        ("e", torch.randn(3, generator=g).to(torch.bfloat16)),
        ("big", torch.randn(100, generator=g)),
    ]


def test_buckets_round_trip_by_name_with_dtypes_preserved_and_size_bounded():
    named = _named()
    buckets = list(iter_buckets(named, bucket_bytes=160))  # 40 floats per fp32 bucket
    got = {}
    for b in buckets:
        assert len({e.name for e in b.meta.entries}) == len(b.meta.entries)
        assert b.flat.dtype == getattr(torch, b.meta.dtype)
        if len(b.meta.entries) > 1:
            assert b.meta.nbytes <= 160
        got.update(dict(unflatten(b.meta, b.flat)))
    assert list(sorted(got)) == sorted(n for n, _ in named)
    for name, t in named:
        assert got[name].dtype == t.dtype and torch.equal(got[name], t)
    assert [b.meta.index for b in buckets] == list(range(len(buckets)))
    # each dtype gets its own buckets; the 100-float tensor exceeds the bucket and travels alone
    assert {b.meta.dtype for b in buckets} == {"float32", "bfloat16", "int64"}
    assert [e.name for b in buckets for e in b.meta.entries if len(b.meta.entries) == 1 and e.name == "big"]


def test_packer_copies_on_arrival_so_the_source_may_be_freed():
    packer = BucketPacker(bucket_bytes=1 << 10)
    src = torch.ones(4)
    assert packer.add("x", src) == []
    src.fill_(7)  # ZeRO-3 re-partitions a gathered parameter right after yielding it
    (bucket,) = packer.finish()
    assert torch.equal(bucket.flat, torch.ones(4))


def test_the_same_name_twice_is_an_error():
    packer = BucketPacker(1 << 10)
    packer.add("x", torch.ones(2))
    with pytest.raises(ValueError, match="'x' was given twice"):
        packer.add("x", torch.ones(2))


def test_unflatten_rejects_metadata_that_does_not_match_the_tensor():
    (b,) = list(iter_buckets([("x", torch.ones(3))], 1 << 10))
    with pytest.raises(ValueError, match="metadata says 3 x float32"):
        unflatten(b.meta, torch.ones(4))


def test_object_store_byte_form_round_trips_bfloat16():
    (b,) = list(iter_buckets([("x", torch.randn(5).to(torch.bfloat16))], 1 << 10))
    meta_json, raw = bucket_to_bytes(b)
    back = bucket_from_bytes(meta_json, raw.copy())
    assert back.meta == b.meta and torch.equal(back.flat, b.flat)


def test_checksum_detects_a_flipped_bit_and_swapped_values():
    t = torch.randn(1000)
    base = checksum(t)
    flipped = t.clone()
    flipped.view(torch.int32)[123] ^= 1
    swapped = t.clone()
    swapped[[3, 4]] = swapped[[4, 3]]
    assert checksum(t.clone()) == base
    assert checksum(flipped) != base and checksum(swapped) != base
    assert checksum(torch.ones(3, dtype=torch.bfloat16)) != checksum(torch.ones(3, dtype=torch.float16))
    assert checksum(t.view(10, 100).t()) == checksum(t.view(10, 100).t().contiguous())


class _Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(6, 4)
        self.lin = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 6, bias=False)
        self.head.weight = self.emb.weight
        self.register_buffer("scale", torch.ones(4))


def _sent_from(seed: int, dtype=torch.float32):
    torch.manual_seed(seed)
    m = _Tied().to(dtype)
    return m, [(n, t.detach().clone()) for n, t in m.state_dict().items()]


def test_receiver_binds_parameters_to_the_buffer_so_the_next_sync_lands_in_place():
    _, first = _sent_from(1)
    dst = _Tied()
    rx = ModelReceiver(dst)
    for named in (first, _sent_from(2)[1]):
        rx.begin()
        buffers = []
        for b in iter_buckets(named, bucket_bytes=64):
            buf = rx.buffer_for(b.meta, "cpu")
            buf.copy_(b.flat)  # what the wire does
            rx.apply(b.meta, buf)
            buffers.append(buf)
        rx.finish()
        assert state_checksums(dst.state_dict().items()) == state_checksums(named)
    # second sync: same layout, so it was received into the buffers the parameters already live in
    lin_w = dst.lin.weight
    assert any(buf.data_ptr() <= lin_w.data_ptr() < buf.data_ptr() + buf.numel() * 4 for buf in buffers)
    assert dst.head.weight is dst.emb.weight  # tying survives


def test_a_load_through_another_layout_does_not_leave_the_next_in_place_receive_loading_nothing():
    """Bound by one bucket size, loaded once through another (a catch-up, a scramble), then received in place
    again: the old buffers are no longer what the parameters view, so the receive must write, not skip."""
    dst = _Tied()
    rx = ModelReceiver(dst)

    def sync(named, bucket_bytes):
        rx.begin()
        for b in iter_buckets(named, bucket_bytes=bucket_bytes):
            rx.apply(b.meta, rx.buffer_for(b.meta, "cpu").copy_(b.flat))
        rx.finish()

    for seed, size in ((1, 64), (2, 64), (3, 1 << 10), (4, 64)):
        _, named = _sent_from(seed)
        sync(named, size)
        assert state_checksums(dst.state_dict().items()) == state_checksums(named), (seed, size)
    assert dst.head.weight is dst.emb.weight


def test_receiver_casts_when_the_dtypes_differ():
    _, named = _sent_from(3, torch.float32)
    dst = _Tied().to(torch.bfloat16)
    rx = ModelReceiver(dst)
    for _ in range(2):
        rx.begin()
        for b in iter_buckets(named, 1 << 10):
            rx.apply(b.meta, rx.buffer_for(b.meta, "cpu").copy_(b.flat))
        rx.finish()
    assert dst.lin.weight.dtype == torch.bfloat16
    assert torch.equal(dst.lin.weight, dict(named)["lin.weight"].to(torch.bfloat16))


def test_receiver_errors_name_the_problem():
    rx = ModelReceiver(_Tied())
    (b,) = list(iter_buckets([("nope", torch.ones(2))], 1 << 10))
    with pytest.raises(SyncError, match="'nope', which this model does not have"):
        rx.apply(b.meta, b.flat)
    (b,) = list(iter_buckets([("lin.weight", torch.ones(2, 2))], 1 << 10))
    with pytest.raises(SyncError, match=r"lin.weight: sender shape \(2, 2\) != receiver shape \(4, 4\)"):
        rx.apply(b.meta, b.flat)
    rx.begin()
    (b,) = list(iter_buckets([("lin.bias", torch.ones(4))], 1 << 10))
    rx.apply(b.meta, b.flat)
    with pytest.raises(SyncError, match="tensors not sent"):
        rx.finish()


def test_a_tied_weight_sent_once_counts_for_both_names_in_place_too():
    dst = _Tied()
    rx = ModelReceiver(dst)
    emb_at = []
    for seed in (4, 5):  # first sync binds, second lands in place
        src, _ = _sent_from(seed)
        named = [(n, t) for n, t in src.state_dict().items() if n != "head.weight"]  # the sender dedups ties
        rx.begin()
        for b in iter_buckets(named, 64):
            rx.apply(b.meta, rx.buffer_for(b.meta, "cpu").copy_(b.flat))
        rx.finish()  # raises "tensors not sent" unless the tie counts emb.weight as head.weight too
        assert state_checksums(dst.state_dict().items()) == state_checksums(src.state_dict().items())
        assert dst.head.weight is dst.emb.weight
        emb_at.append(dst.emb.weight.data_ptr())
    assert emb_at[0] == emb_at[1]  # the second sync wrote into the buffer the first one bound


def test_zero_copy_turns_back_to_back_tensors_into_views_and_copies_when_the_run_breaks():
    flat = torch.arange(40, dtype=torch.float32)
    named = [("a", flat[0:10].view(2, 5)), ("b", flat[10:16]), ("c", flat[16:20]),  # one run
             ("x", torch.full((3,), -1.0)),  # elsewhere: breaks the run
             ("d", flat[20:40].view(4, 5))]
    buckets = list(iter_buckets(named, bucket_bytes=4 * 16, zero_copy=True))
    inside = lambda t: flat.data_ptr() <= t.data_ptr() < flat.data_ptr() + flat.numel() * 4  # noqa: E731
    by_names = {tuple(e.name for e in b.meta.entries): b for b in buckets}
    assert inside(by_names[("a", "b")].flat)  # a view: nothing was copied
    assert not inside(by_names[("c", "x")].flat)  # c started a run, x broke it: copied into a buffer
    assert inside(by_names[("d",)].flat)  # oversized and contiguous: sent as it is
    got = {n: v for b in buckets for n, v in unflatten(b.meta, b.flat)}
    for name, t in named:
        assert torch.equal(got[name], t)
    copied = list(iter_buckets(named, bucket_bytes=4 * 16))
    assert not any(inside(b.flat) for b in copied)  # the default copies: safe for tensors freed after yielding


class _FakeWork:
    def __init__(self):
        self.done = False
        self.waited = False

    def is_completed(self):
        return self.done

    def wait(self):
        self.waited = self.done = True


def test_buffer_pool_reuses_idle_buffers_and_waits_for_the_oldest_only_at_depth():
    from rayscale.sync.sender import BufferPool
    from rayscale.wire.buckets import Bucket, BucketMeta

    pool = BufferPool("cpu", depth=2)

    def send(buf):
        work = _FakeWork()
        pool.sent(Bucket(BucketMeta("float32", buf.numel()), buf), work)
        return work

    a = pool.alloc(torch.float32, 8)
    wa = send(a)
    b = pool.alloc(torch.float32, 8)
    assert b.data_ptr() != a.data_ptr()
    wb = send(b)
    c = pool.alloc(torch.float32, 4)  # both in flight, depth reached: waits for the first one sent
    assert c.data_ptr() == a.data_ptr() and wa.waited and not wb.waited
    wb.done = True
    send(c)
    assert pool.alloc(torch.float32, 8).data_ptr() == b.data_ptr()  # idle: reused without waiting
    big = pool.alloc(torch.float32, 100)  # nothing fits: a new buffer whatever the depth
    assert big.numel() == 100
    view = torch.zeros(3)
    pool.sent(Bucket(BucketMeta("float32", 3), view), _FakeWork())  # not the pool's: ignored


def test_a_bf16_engine_is_sent_half_the_bytes_cast_in_the_packing_copy():
    named = _named()
    buckets = list(iter_buckets(named, bucket_bytes=160, zero_copy=True, cast=torch.bfloat16))
    got = {name: view for b in buckets for name, view in unflatten(b.meta, b.flat)}
    for name, t in named:
        want = t.to(torch.bfloat16) if t.is_floating_point() else t
        assert got[name].dtype == want.dtype and torch.equal(got[name], want), name
    assert {b.flat.dtype for b in buckets} == {torch.bfloat16, torch.int64}
    sent = sum(b.flat.numel() * b.flat.element_size() for b in buckets if b.flat.dtype == torch.bfloat16)
    floats = sum(t.numel() for _, t in named if t.is_floating_point())
    assert sent == 2 * floats  # bf16 on the wire: half of fp32's 4 bytes for the fp32 tensors
