from __future__ import annotations

import pytest

from rayscale.rollout.scheduling import Dispatch, balance, chunk_requests


def test_balance_evens_out_samples_and_keeps_input_order():
    sizes = [4, 1, 1, 1, 1, 4, 2]
    shards = balance(sizes, 2)
    assert sorted(i for s in shards for i in s) == list(range(len(sizes)))
    assert all(s == sorted(s) for s in shards)
    assert [sum(sizes[i] for i in s) for s in shards] == [7, 7]
    assert balance([3], 4) == [[0], [], [], []]
    with pytest.raises(ValueError, match="at least one worker"):
        balance([1], 0)


def test_chunks_keep_requests_whole_and_in_order_and_reach_every_worker():
    assert chunk_requests([2, 2, 2, 2, 2, 2], 4, 2) == [[0, 1], [2, 3], [4, 5]]
    assert chunk_requests([8, 1, 1], 4, 2) == [[0], [1, 2]]  # a request over the limit is a chunk alone
    assert chunk_requests([8, 1, 1], 4, 1) == [[0, 1, 2]]  # one worker: one call, the engine's batch whole
    # a small batch is cut into at most an even share per worker, so all 4 workers get some
    assert chunk_requests([1] * 8, 64, 4) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert chunk_requests([], 4, 2) == []


def _drain(plan, order):
    """Run `plan` to completion, completing chunks in the order `order(running)` picks; (worker, chunk) log."""
    served = []
    while not plan.done:
        plan.assign()
        w, c = order([(w, c) for w, cs in enumerate(plan.running) for c in cs])
        assert plan.complete(w, c)
        served.append((w, c))
    return served


def test_dynamic_dispatch_feeds_whichever_worker_finishes():
    plan = Dispatch([[i] for i in range(7)], num_workers=2, per_worker=2)
    assert plan.assign() == [(0, 0), (1, 1), (0, 2), (1, 3)]  # each worker's first chunk before anyone's second
    assert plan.assign() == []  # both full
    assert plan.complete(1, 1)
    assert plan.assign() == [(1, 4)]  # the worker that finished gets the next chunk
    assert plan.complete(1, 3)
    assert plan.assign() == []  # 2 chunks wait, 2 workers: no second chunk on a busy worker any more
    assert plan.complete(1, 4)
    assert plan.assign() == [(1, 5)]  # worker 0 is still busy with its two: idle worker 1 takes the next
    served = _drain(plan, lambda running: running[0])
    assert sorted(c for _, c in served) == [0, 2, 5, 6] and plan.done


def test_a_lost_worker_requeues_only_its_running_chunks_and_results_count_once():
    plan = Dispatch([[i] for i in range(6)], num_workers=2, per_worker=2)
    plan.assign()  # 0: [0, 2], 1: [1, 3]
    assert plan.complete(0, 0)
    assert plan.lose(1) == [1, 3]
    assert plan.losses == [0, 1, 0, 1, 0, 0]
    assert not plan.complete(1, 1)  # a late answer from the lost worker is not taken
    assert list(plan.waiting) == [1, 3, 4, 5]  # back at the front, in order
    assert plan.assign() == [(1, 1), (0, 3)]  # the emptiest worker (the replacement) first
    assert not plan.complete(1, 0)  # finished already, and not running there
    done = _drain(plan, lambda running: running[-1])
    assert sorted(c for _, c in done) == [1, 2, 3, 4, 5]
    assert plan.finished == set(range(6))


def test_fixed_shares_pin_each_share_to_its_worker_also_after_a_loss():
    plan = Dispatch.fixed_shares([4, 1, 1, 1, 1, 4, 2], 2)
    sent = plan.assign()
    assert [w for w, _ in sent] == [0, 1]
    assert sorted(i for c in plan.chunks for i in c) == list(range(7))
    assert plan.lose(1) == [1]
    assert plan.assign() == [(1, 1)]  # its share waits for its replacement, not for worker 0
    assert Dispatch.fixed_shares([3], 4).assign() == [(0, 0)]  # idle workers get no empty share


def test_dispatch_refuses_no_workers():
    with pytest.raises(ValueError, match="at least one worker"):
        Dispatch([[0]], 0)
    with pytest.raises(ValueError, match="at least one worker"):
        chunk_requests([1], 4, 0)


def _assign_looking_at_every_worker(plan: Dispatch) -> list[tuple[int, int]]:
    """The dynamic rule applied to every worker, as `assign` did before it looked only at the workers whose
    holdings changed: the reference the incremental `assign` must agree with."""
    out = []
    for depth in range(plan.per_worker):
        for w in range(plan.num_workers):
            if len(plan.waiting) <= (plan.num_workers if depth else 0):
                return out
            if len(plan.running[w]) <= depth:
                c = plan.waiting.popleft()
                plan.running[w].append(c)
                out.append((w, c))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_assign_looks_only_at_changed_workers_and_decides_as_if_it_looked_at_all(seed):
    import copy
    import random

    rng = random.Random(seed)
    workers, per_worker = rng.randint(1, 9), rng.randint(1, 3)
    plan = Dispatch([[i] for i in range(rng.randint(0, 60))], workers, per_worker)
    steps = 0
    while not plan.done:
        reference = copy.deepcopy(plan)
        assert plan.assign() == _assign_looking_at_every_worker(reference)
        assert plan.running == reference.running and list(plan.waiting) == list(reference.waiting)
        running = [(w, c) for w, cs in enumerate(plan.running) for c in cs]
        for w, c in rng.sample(running, rng.randint(1, len(running))):  # several back at once, in any order
            if rng.random() < 0.1:
                plan.lose(w)  # its other chunks too: their late answers are refused below
            else:
                plan.complete(w, c)
        steps += 1
    assert plan.finished == set(range(len(plan.chunks))) and steps < 1000
