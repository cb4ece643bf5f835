"""The broadcast protocol over a real gloo group, members as threads of this process (no Ray)."""

from __future__ import annotations

import functools
import threading

import pytest
import torch

from rayscale.wire.buckets import iter_buckets, state_checksums
from rayscale.wire.group import SyncGroup, host_store
from rayscale.wire.protocol import receive_all, send_stream
from rayscale.wire.receiver import ModelReceiver, SyncError


def _run_members(world_size: int, fn, timeout_s: float = 30.0):
    """Run fn(group) on every rank of a fresh gloo group, in threads; returns results by rank (or raises)."""
    store = host_store("127.0.0.1", world_size, timeout_s)
    results: list = [None] * world_size

    def member(rank: int) -> None:
        try:
            group = SyncGroup.join("127.0.0.1", store.port, world_size, rank, "gloo", timeout_s,
                                   store=store if rank == 0 else None)
            results[rank] = fn(group)
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            results[rank] = e

    threads = [threading.Thread(target=member, args=(r,), daemon=True, name=f"rank{r}") for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    assert not any(t.is_alive() for t in threads), "a member hung"
    return results


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def test_every_receiver_ends_bit_identical_to_the_sender_and_syncs_repeat_in_place():
    src = _model(0)
    dst = [_model(1), _model(2)]
    rx = [ModelReceiver(m) for m in dst]

    def member(group: SyncGroup, version: int):
        if group.rank == 0:
            return send_stream(group, iter_buckets(src.state_dict().items(), 256), version=version, verify=True)
        r = rx[group.rank - 1]
        r.begin()
        report = receive_all(group, lambda m: r.buffer_for(m, "cpu"), r.apply, version=version, verify=True)
        r.finish()
        return report

    for version in (1, 2):
        with torch.no_grad():
            src[0].weight.add_(1.0)
        reports = _run_members(3, functools.partial(member, version=version))
        for rep in reports:
            assert not isinstance(rep, BaseException), rep
        assert reports[0].buckets > 1 and reports[0].bytes == sum(t.numel() * 4 for t in src.state_dict().values())
        want = state_checksums(src.state_dict().items())
        for m in dst:
            assert state_checksums(m.state_dict().items()) == want


def test_a_corrupt_bucket_fails_the_receiver_after_draining_and_the_sender_finishes(monkeypatch):
    import rayscale.wire.protocol as protocol

    real = protocol.checksum
    # what a transfer that flipped bits looks like from the receiving side
    monkeypatch.setattr(protocol, "checksum",
                        lambda t: real(t) + (threading.current_thread().name != "rank0"))
    src = _model(0)

    def member(group: SyncGroup):
        if group.rank == 0:
            return send_stream(group, iter_buckets(src.state_dict().items(), 256), version=3, verify=True)
        r = ModelReceiver(_model(1))
        return receive_all(group, lambda m: r.buffer_for(m, "cpu"), r.apply, version=3, verify=True)

    sent, received = _run_members(2, member)
    assert sent.buckets > 1
    assert isinstance(received, SyncError) and "checksum mismatch in bucket(s) [0, 1" in str(received)


def test_with_a_plan_the_layout_is_announced_and_a_changed_layout_fails_both_sides_cleanly():
    src = _model(0)
    first = list(iter_buckets(src.state_dict().items(), 256))
    plan = [b.meta for b in first]
    dst = _model(1)
    rx = ModelReceiver(dst)

    def member(group: SyncGroup, buckets, plan):
        if group.rank == 0:
            return send_stream(group, buckets, version=1, plan=plan)
        rx.begin()
        return receive_all(group, lambda m: rx.buffer_for(m, "cpu"), rx.apply, version=1)

    sent, received = _run_members(2, lambda g: member(g, first, plan))
    assert sent.planned and received.planned and received.buckets == len(plan)
    assert state_checksums(dst.state_dict().items()) == state_checksums(src.state_dict().items())
    # a sender whose buckets no longer match what it announced: same sizes are still sent, both sides fail
    other = list(iter_buckets(src.state_dict().items(), 64))
    sent, received = _run_members(2, lambda g: member(g, other, plan))
    assert isinstance(sent, SyncError) and "layout changed" in str(sent)
    assert isinstance(received, SyncError) and "the sender failed" in str(received)


def test_a_consumer_that_stops_early_leaves_the_stream_in_step():
    from rayscale.wire.protocol import iter_received

    src = _model(0)
    buckets = list(iter_buckets(src.state_dict().items(), 128))

    def member(group: SyncGroup, plan):
        if group.rank == 0:
            return send_stream(group, buckets, version=1, plan=plan)
        stream = iter_received(group, lambda m: torch.empty(m.numel), version=1, max_in_flight=2)
        next(stream)
        stream.close()  # e.g. vLLM's weight loader raised on the first bucket
        return "closed"

    for plan in (None, [b.meta for b in buckets]):
        sent, received = _run_members(2, functools.partial(member, plan=plan))
        assert received == "closed" and sent.buckets == len(buckets)


def test_a_version_mismatch_is_reported():
    src = _model(0)

    def member(group: SyncGroup):
        if group.rank == 0:
            return send_stream(group, iter_buckets(src.state_dict().items(), 1 << 20), version=5)
        r = ModelReceiver(_model(1))
        return receive_all(group, lambda m: r.buffer_for(m, "cpu"), r.apply, version=4)

    _, received = _run_members(2, member)
    assert isinstance(received, SyncError) and "expected weights of version 4" in str(received)


def test_joining_fails_fast_when_a_member_never_comes():
    store = host_store("127.0.0.1", 2, 1.0)
    # the error itself is the behaviour (a hang would end at the test timeout, not here); no wall-clock ceiling
    with pytest.raises(TimeoutError, match="only 1 of 2 members joined"):
        SyncGroup.join("127.0.0.1", store.port, 2, 0, "gloo", timeout_s=1.0, store=store)


def test_nccl_without_a_gpu_says_so():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    store = host_store("127.0.0.1", 1, 5.0)
    with pytest.raises(RuntimeError, match="nccl sync backend needs a CUDA GPU"):
        SyncGroup.join("127.0.0.1", store.port, 1, 0, "nccl", 5.0, store=store)


def test_a_receiver_that_cannot_apply_a_bucket_still_drains_the_stream():
    src = _model(0)

    def member(group: SyncGroup):
        if group.rank == 0:
            return send_stream(group, iter_buckets(src.state_dict().items(), 64), version=1)
        r = ModelReceiver(torch.nn.Linear(2, 2))  # a different model: the first name is unknown
        return receive_all(group, lambda m: r.buffer_for(m, "cpu"), r.apply, version=1)

    sent, received = _run_members(2, member)
    assert sent.buckets > 1
    assert isinstance(received, SyncError) and "which this model does not have" in str(received)
