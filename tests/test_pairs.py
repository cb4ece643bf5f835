import random

from rayscale.algos import pairs as P
from rayscale.config import StepControlledConfig, WeakToStrongConfig
from rayscale.text import split_at_step, step_starts
from rayscale.types import Sample


def sample(text, prefix="", pid="p1", version=3, finish="stop"):
    return Sample(prompt_id=pid, prompt="<|user|>5+7*3-4=?<|assistant|>", prefix=prefix, text=text,
                  finish_reason=finish, policy_version=version)


RIGHT = "7*3=21\n5+21=26\n26-4=22\n\\boxed{22}"
WRONG = "7*3=24\n5+24=29\n29-4=25\n\\boxed{25}"


def test_split_at_step_is_exact():
    for k in range(5):
        prefix, rest = split_at_step(RIGHT, k)
        assert prefix + rest == RIGHT
    assert split_at_step(RIGHT, 1) == ("7*3=21\n", "5+21=26\n26-4=22\n\\boxed{22}")
    assert step_starts("  a\n\n b\n") == [2, 6]


def test_outcome_pairs_pair_right_with_wrong_and_dedupe():
    graded = [P.Graded(sample(RIGHT), True), P.Graded(sample(RIGHT), True), P.Graded(sample(WRONG), False)]
    pairs = P.outcome_pairs(graded, random.Random(0))
    assert len(pairs) == 1  # two identical right samples count once
    (p,) = pairs
    assert (p.chosen, p.rejected, p.shared_prefix, p.strategy, p.policy_version) == (RIGHT, WRONG, "", "outcome", 3)
    assert P.outcome_pairs([P.Graded(sample(RIGHT), True)], random.Random(0)) == []


def test_correction_pair_masks_shared_prefix():
    wrong = sample("7*3=21\n5+21=27\n27-4=23\n\\boxed{23}", version=5)
    p = P.correction_pair(wrong, 1, "5+21=26\n26-4=22\n\\boxed{22}")
    assert p.shared_prefix == "7*3=21\n"
    assert p.shared_prefix + p.chosen == RIGHT
    assert p.shared_prefix + p.rejected == wrong.response
    assert p.strategy == "correction" and p.policy_version == 5
    assert P.correction_pair(wrong, 9, "x") is None  # not a real step index
    assert P.correction_pair(wrong, 1, "5+21=27\n27-4=23\n\\boxed{23}") is None  # nothing to prefer


def test_correction_pair_on_a_continuation_sample_uses_the_whole_response():
    s = sample("5+21=27\n27-4=23\n\\boxed{23}", prefix="7*3=21\n")
    p = P.correction_pair(s, 1, "5+21=26\n26-4=22\n\\boxed{22}")
    assert p.shared_prefix == "7*3=21\n" and p.rejected.startswith("5+21=27")


def test_no_correction_pair_when_the_student_was_cut_off_right_at_its_wrong_step():
    # Seen on SmolLM2 + GSM8K: the student ran out of tokens, the teacher put the error after the last complete
    # step; the student's side would be empty and unended, with no token to carry loss.
    cut = sample("7*3=21\n5+21=26\n", finish="length")
    assert P.correction_pair(cut, 2, "26-4=22\n\\boxed{22}") is None
    ended = sample("7*3=21\n5+21=26\n")  # the same text ended by EOS: its end is the wrong decision
    pair = P.correction_pair(ended, 2, "26-4=22\n\\boxed{22}")
    assert pair is not None and pair.rejected == "" and pair.rejected_ended


def test_step_span_keeps_only_the_wrong_step_and_its_correction():
    wrong = sample("7*3=21\n5+21=27\n27-4=23\n\\boxed{23}", finish="length")
    p = P.correction_pair(wrong, 1, "5+21=26\n26-4=22\n\\boxed{22}", span="step")
    assert (p.shared_prefix, p.chosen, p.rejected) == ("7*3=21\n", "5+21=26\n", "5+21=27\n")
    assert (p.chosen_ended, p.rejected_ended) == (False, False)  # cut mid-solution: no EOS on either side
    # a wrong answer line is the last step: both sides end the response there
    last = P.correction_pair(sample("7*3=21\n5+21=26\n26-4=22\n\\boxed{23}"), 3, "\\boxed{22}", span="step")
    assert (last.chosen, last.rejected, last.chosen_ended, last.rejected_ended) == (
        "\\boxed{22}", "\\boxed{23}", True, True)
    # the same first step on both sides is nothing to prefer, whatever follows
    assert P.correction_pair(wrong, 1, "5+21=27\n27-4=22\n\\boxed{22}", span="step") is None


def test_truncated_rejected_gets_no_eos():
    wrong = sample("7*3=21\n5+21=27\n27-4=2", finish="length")
    assert P.correction_pair(wrong, 1, "5+21=26\n26-4=22\n\\boxed{22}").rejected_ended is False


def test_step_controlled_temperature_rises_and_caps():
    cfg = StepControlledConfig(t0=0.7, delta=0.2, t_max=1.2)
    assert [round(P.step_temperature(k, 0, cfg), 6) for k in range(5)] == [0.7, 0.9, 1.1, 1.2, 1.2]
    assert P.step_temperature(0, 1, cfg) > P.step_temperature(0, 0, cfg)


def test_step_controlled_requests_and_pairs():
    g = P.Graded(sample(RIGHT), True)
    reqs = P.step_controlled_requests([g], StepControlledConfig(), random.Random(1), attempt=0, seed=10)
    (orig, k, req) = reqs[0]
    assert 0 <= k < 3 and req.prefix == split_at_step(RIGHT, k)[0] and req.n == 1 and req.seed == 10
    resampled = sample("oops\n\\boxed{0}", prefix=req.prefix)
    pair = P.step_controlled_pair(orig.sample, k, resampled)
    assert pair.shared_prefix + pair.chosen == RIGHT and pair.rejected == "oops\n\\boxed{0}"
    assert pair.strategy == "step_controlled"


def test_majority_vote_and_weak_to_strong_decisions():
    cfg = WeakToStrongConfig(skip_below=0.6, overrule_at=0.8)
    gs = [P.Graded(sample(f"t{i}"), False, a) for i, a in enumerate(["5", "5", "5", "5", "7"])]
    assert P.majority_vote(gs) == ("5", 0.8)
    assert P.weak_to_strong_label(gs, "7", cfg) == ("5", "overruled_weak")
    three = gs[:3] + [P.Graded(sample("t8"), False, "7"), P.Graded(sample("t9"), False, "9")]
    assert P.weak_to_strong_label(three, "7", cfg) == ("7", "weak")  # 0.6 <= conf < 0.8: weak label stands
    split = [P.Graded(sample(f"s{i}"), False, a) for i, a in enumerate(["1", "2", "3", "1"])]
    assert P.weak_to_strong_label(split, "1", cfg) == (None, "skip_low_confidence")
    pairs = P.weak_to_strong_pairs(gs, "5", random.Random(0))
    assert pairs and all(p.strategy == "weak_to_strong" for p in pairs)
    assert pairs[0].chosen.startswith("t") and pairs[0].rejected == "t4"


def test_assign_strategies_single_and_mix():
    ids = [f"p{i}" for i in range(1000)]
    assert set(P.assign_strategies(ids, "outcome", random.Random(0)).values()) == {"outcome"}
    mix = P.assign_strategies(ids, {"correction": 0.75, "outcome": 0.25, "step_controlled": 0}, random.Random(0))
    share = sum(v == "correction" for v in mix.values()) / len(ids)
    assert 0.7 < share < 0.8 and "step_controlled" not in mix.values()
    assert mix == P.assign_strategies(ids, {"correction": 0.75, "outcome": 0.25, "step_controlled": 0},
                                      random.Random(0))
