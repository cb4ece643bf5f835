"""Streaming stages (rayscale.algos.streaming) with fake verifier and teacher: no Ray, threads only."""

from __future__ import annotations

import random
import threading
import time

import pytest

from rayscale.algos import pairs as P
from rayscale.algos import strategies as S
from rayscale.algos.streaming import CoalescingStage, Streaming
from rayscale.config import AlgoConfig
from rayscale.data import Problem
from rayscale.teacher.records import Correction
from rayscale.types import Sample, VerifyResult

RIGHT = "7*3=21\n5+21=26\n26-4=22\n\\boxed{22}"
WRONGS = ["7*3=24\n5+24=29\n29-4=25\n\\boxed{25}", "7*3=21\n5+21=27\n27-4=23\n\\boxed{23}",
          "7*3=21\n5+21=26\n26-4=21\n\\boxed{21}"]


def batch_and_samples(n_prompts=12, n=4, seed=0):
    rng = random.Random(seed)
    batch = [Problem(id=f"p{i}", question="5+7*3-4=?", gold_answer="22") for i in range(n_prompts)]
    samples = [[Sample(p.id, "q", "", rng.choice([RIGHT, *WRONGS])) for _ in range(n)] for p in batch]
    return batch, samples


class Teacher:
    """Corrects every item (step 2 wrong, the right continuation); records each call's prompt ids."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, items):
        with self.lock:
            self.calls.append([p.id for p, _ in items])
        return [Correction(p.id, 1, "5+21 is 26", ["5+21=26", "26-4=22", "\\boxed{22}"],
                           ["7*3=21", "5+21=26", "26-4=22", "\\boxed{22}"], None, None, True, None)
                for p, _ in items]


def verify(items):
    time.sleep(0.002)
    return [VerifyResult("\\boxed{22}" in response, None, "ok", "") for _, response in items]


def context(algo, teacher, prompt_rng):
    return S.StrategyContext(algo=algo, generate=None, verify=verify, correct=teacher, weak_answers=None,
                             seed=lambda *a: 0, prompt_rng=prompt_rng)


def streamed_pairs(order: list[int], seed=0):
    """Correction pairs built through the streaming stages, the chunks (one request each) reported in `order`."""
    batch, samples = batch_and_samples(seed=seed)
    algo, teacher = AlgoConfig(), Teacher()
    ctx = context(algo, teacher, lambda p: random.Random(f"7:1:{p.id}"))
    stream = Streaming(batch, verify, teacher, lambda p, gs: S.teacher_items("correction", ctx, p, gs))
    try:
        for i in order:
            stream.chunk_done([i], [samples[i]])
            time.sleep(0.001)  # the stages work between chunks, as beside a real rollout
        graded = stream.graded()
        ctx = context(algo, stream.correct, ctx.prompt_rng)
        pairs = S.build_pairs("correction", ctx, list(zip(batch, graded)), random.Random(0), 1, {})
    finally:
        stream.close()
    return pairs, graded, teacher, stream.teacher.calls


def test_streaming_grades_every_sample_as_without_streaming_and_the_teacher_works_ahead():
    batch, samples = batch_and_samples()
    order = list(range(len(batch)))
    random.Random(1).shuffle(order)
    pairs, graded, teacher, stage_calls = streamed_pairs(order)
    assert [[g.correct for g in gs] for gs in graded] == [[s.response == RIGHT for s in ss] for ss in samples]
    assert [[g.sample.response for g in gs] for gs in graded] == [[s.response for s in ss] for ss in samples]
    asked = [pid for call in teacher.calls for pid in call]
    wanted = sum(min(2, len({s.response for s in ss if s.response != RIGHT})) for ss in samples)
    assert len(asked) == wanted and len(pairs) == wanted > 0  # every wrong sample picked, asked once
    assert stage_calls == len(teacher.calls)  # every call made by the teacher stage: the builder asked nothing itself


def test_streamed_pairs_do_not_depend_on_the_order_chunks_come_back_in():
    forward, *_ = streamed_pairs(list(range(12)))
    backward, *_ = streamed_pairs(list(reversed(range(12))))
    key = lambda pairs: [(p.prompt_id, p.shared_prefix, p.chosen, p.rejected) for p in pairs]  # noqa: E731
    assert key(forward) == key(backward)
    other_seed, *_ = streamed_pairs(list(range(12)), seed=3)
    assert key(other_seed) != key(forward)


def test_the_builder_asks_the_teacher_itself_for_what_the_stage_did_not_send():
    batch, samples = batch_and_samples(n_prompts=3)
    teacher = Teacher()
    stream = Streaming(batch, verify, teacher, lambda p, gs: [])  # a stage told of nothing to correct
    for i in range(3):
        stream.chunk_done([i], [samples[i]])
    graded = stream.graded()
    wrong = [(p, g) for p, gs in zip(batch, graded) for g in gs if not g.correct]
    assert wrong and len(stream.correct(wrong)) == len(wrong)
    assert teacher.calls == [[p.id for p, _ in wrong]]  # one direct call, after the (empty) stage drained
    stream.close()


def test_the_verify_stage_runs_while_chunks_are_still_coming():
    batch, samples = batch_and_samples(n_prompts=2)
    first_graded = threading.Event()

    def slow_verify(items):
        out = verify(items)
        first_graded.set()
        return out

    stream = Streaming(batch, slow_verify, Teacher(), lambda p, gs: [])
    stream.chunk_done([0], [samples[0]])
    assert first_graded.wait(5)  # graded before the second chunk exists
    stream.chunk_done([1], [samples[1]])
    assert len(stream.graded()) == 2
    stream.close()


def test_a_failing_stage_raises_in_the_caller_and_never_hangs():
    batch, samples = batch_and_samples(n_prompts=2)

    def broken(items):
        raise RuntimeError("verifier pool gone")

    stream = Streaming(batch, broken, Teacher(), lambda p, gs: [])
    stream.chunk_done([0], [samples[0]])
    with pytest.raises(RuntimeError, match="verifier pool gone"):
        stream.graded()
    stream.close()  # already failed: returns


def test_a_chunk_never_reported_is_named():
    batch, samples = batch_and_samples(n_prompts=2)
    stream = Streaming(batch, verify, Teacher(), lambda p, gs: [])
    stream.chunk_done([0], [samples[0]])
    with pytest.raises(RuntimeError, match="1 prompts never graded .*p1"):
        stream.graded()
    stream.close()


def test_a_coalescing_stage_takes_everything_that_arrived_during_its_last_call():
    gate, started, seen = threading.Event(), threading.Event(), []

    def fn(items):
        started.set()
        gate.wait(5)
        seen.append(list(items))
        return items

    stage = CoalescingStage("t", fn, lambda items, results: None)
    stage.submit([1])
    assert started.wait(5)  # the first call is running (held at the gate)
    stage.submit([2])
    stage.submit([3, 4])
    gate.set()
    stage.close()
    assert seen == [[1], [2, 3, 4]] and stage.calls == 2
    with pytest.raises(RuntimeError, match="after close"):
        stage.submit([5])


def test_graded_samples_keep_their_identity_for_the_teacher_lookup():
    batch, samples = batch_and_samples(n_prompts=1)
    stream = Streaming(batch, verify, Teacher(), lambda p, gs: [(p, g) for g in gs if not g.correct])
    stream.chunk_done([0], [samples[0]])
    (gs,) = stream.graded()
    assert all(isinstance(g, P.Graded) for g in gs)
    wrong = [(batch[0], g) for g in gs if not g.correct]
    assert [c.prompt_id for c in stream.correct(wrong)] == ["p0"] * len(wrong)
    stream.close()


def test_teacher_items_refuse_a_context_without_per_prompt_draws():
    batch, samples = batch_and_samples(n_prompts=1)
    gs = [P.Graded(s, s.response == RIGHT, None) for s in samples[0]]
    with pytest.raises(ValueError, match="prompt_rng"):
        S.teacher_items("correction", context(AlgoConfig(), Teacher(), None), batch[0], gs)
    assert S.teacher_items("outcome", context(AlgoConfig(), Teacher(), lambda p: random.Random(0)), batch[0], gs) == []
