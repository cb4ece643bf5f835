"""The strategy registry and its built-in builders, with fake actors: no Ray, milliseconds."""

import random
import subprocess
import sys

import pytest

from rayscale.algos import pairs as P
from rayscale.algos import strategies as S
from rayscale.config import AlgoConfig
from rayscale.config_loading import load_config
from rayscale.data import Problem
from rayscale.errors import ConfigError
from rayscale.teacher.records import Correction
from rayscale.text import split_at_step
from rayscale.types import PreferencePair, Sample, VerifyResult

PROMPT = "<|user|>5+7*3-4=?<|assistant|>"
RIGHT = "7*3=21\n5+21=26\n26-4=22\n\\boxed{22}"
WRONG = "7*3=24\n5+24=29\n29-4=25\n\\boxed{25}"
WRONG2 = "7*3=21\n5+21=27\n27-4=23\n\\boxed{23}"


def sample(text, pid="p1", prefix="", version=3):
    return Sample(prompt_id=pid, prompt=PROMPT, prefix=prefix, text=text, policy_version=version)


def graded(pid, *texts_ok):
    return [P.Graded(sample(t, pid), ok, t.rsplit("{", 1)[1].rstrip("}") if "{" in t else None) for t, ok in texts_ok]


def problem(pid, gold="22"):
    return Problem(id=pid, question="5+7*3-4=?", gold_answer=gold)


class Fakes:
    """Records every call; answers from scripted callables."""

    def __init__(self, algo=None, generate=None, verify=None, correct=None, weak=None):
        self.calls: dict[str, list] = {"generate": [], "verify": [], "correct": [], "weak": [], "seed": []}
        self._generate, self._verify, self._correct, self._weak = generate, verify, correct, weak
        self.ctx = S.StrategyContext(algo=algo or AlgoConfig(), generate=self.generate, verify=self.verify,
                                     correct=self.correct, weak_answers=self.weak_answers, seed=self.seed)

    def generate(self, reqs):
        self.calls["generate"].append(list(reqs))
        return [[self._generate(r)] for r in reqs]

    def verify(self, items):
        self.calls["verify"].append(list(items))
        return [VerifyResult(f"\\boxed{{{gold}}}" in resp, None, "ok", "") for gold, resp in items]

    def correct(self, wrong):
        self.calls["correct"].append(list(wrong))
        return [self._correct(p, g) for p, g in wrong]

    def weak_answers(self, problems):
        self.calls["weak"].append([p.id for p in problems])
        return self._weak

    def seed(self, *parts):
        self.calls["seed"].append(parts)
        return sum(parts) * 1000


def test_builtins_registered_in_order():
    assert S.strategy_names()[:4] == ("outcome", "correction", "step_controlled", "weak_to_strong")
    assert S.get_strategy("outcome") is S.outcome
    with pytest.raises(KeyError, match="unknown strategy 'nope'; expected one of outcome, correction"):
        S.get_strategy("nope")


def test_outcome_builder_pairs_each_prompt_with_the_shared_rng():
    group = [(problem("p1"), graded("p1", (RIGHT, True), (WRONG, False), (WRONG2, False))),
             (problem("p2"), graded("p2", (RIGHT, True), (RIGHT, True))),  # all right: no pair
             (problem("p3"), graded("p3", (RIGHT, True), (WRONG, False)))]
    f, stats = Fakes(), {}
    pairs = S.build_pairs("outcome", f.ctx, group, random.Random(7), 1, stats)
    rng = random.Random(7)  # same draws as calling pairs.outcome_pairs prompt by prompt
    assert pairs == [p for _, gs in group for p in P.outcome_pairs(gs, rng)]
    assert [(p.prompt_id, p.chosen, p.strategy) for p in pairs] == [("p1", RIGHT, "outcome"), ("p3", RIGHT, "outcome")]
    assert stats == {} and not any(f.calls.values())  # no actor needed


def test_correction_builder_uses_the_teacher_and_counts_rejections():
    def teach(p, g):
        if g.sample.response == WRONG:
            return Correction.rejected(p.id, "no_error_found")
        return Correction(p.id, 1, "5+21 is 26", ["7*3=21"], ["5+21=26", "26-4=22", "\\boxed{22}"], RIGHT, "22",
                          True, None)

    group = [(problem("p1"), graded("p1", (RIGHT, True), (WRONG, False), (WRONG2, False), (WRONG2, False))),
             (problem("p2"), graded("p2", (RIGHT, True)))]  # nothing wrong: nothing sent
    f, stats = Fakes(correct=teach), {}
    pairs = S.get_strategy("correction")(f.ctx, group, random.Random(0), 4, stats)
    (sent,) = f.calls["correct"]
    assert sorted(g.sample.response for _, g in sent) == sorted([WRONG, WRONG2])  # distinct, max_per_prompt 2
    assert all(p.id == "p1" for p, _ in sent)
    assert stats == {"teacher_rejected/no_error_found": 1, "correction/requests": 2}  # 2 sent, 1 rejected
    (pair,) = pairs
    assert (pair.shared_prefix, pair.chosen, pair.rejected, pair.strategy) == (
        "7*3=21\n", "5+21=26\n26-4=22\n\\boxed{22}", "5+21=27\n27-4=23\n\\boxed{23}", "correction")
    assert pair.note == "step 2 wrong: 5+21 is 26"
    # span=step: only the corrected step against the wrong one
    algo = AlgoConfig(correction={"span": "step", "max_per_prompt": 1})
    f2 = Fakes(algo=algo, correct=teach)
    group = [(problem("p1"), graded("p1", (WRONG2, False)))]
    (pair,) = S.build_pairs("correction", f2.ctx, group, random.Random(0), 4, {})
    assert (pair.chosen, pair.rejected) == ("5+21=26\n", "5+21=27\n")


def test_step_controlled_builder_resamples_until_wrong_with_seeds_from_ctx():
    # p1's correct sample breaks on the second try; p2's never does (max_tries 2); wrong samples are never resampled.
    tries = {"p1": 0}

    def gen(req):
        if req.prompt_id == "p1":
            tries["p1"] += 1
            return sample("9\n\\boxed{9}" if tries["p1"] == 2 else "5+21=26\n26-4=22\n\\boxed{22}", "p1", req.prefix)
        return sample("\\boxed{22}", "p2", req.prefix)

    algo = AlgoConfig(seed=5, step_controlled={"max_tries": 2})
    group = [(problem("p1"), graded("p1", (RIGHT, True), (RIGHT, True), (WRONG, False))),
             (problem("p2"), graded("p2", (RIGHT, True)))]
    f, stats = Fakes(algo=algo, generate=gen), {}
    pairs = S.build_pairs("step_controlled", f.ctx, group, random.Random(3), 9, stats)
    assert f.calls["seed"] == [(5, 9, 3, 0), (5, 9, 3, 1)]  # the controller's _seed(algo.seed, it, 3, attempt)
    first, second = f.calls["generate"]
    assert [r.prompt_id for r in first] == ["p1", "p2"]  # one distinct correct sample per prompt
    assert [r.seed for r in first] == [17000, 17001] and [r.seed for r in second] == [18000, 18001]
    assert [gold for gold, _ in f.calls["verify"][0]] == ["22", "22"]
    (pair,) = pairs
    k = next(k for k in range(4) if split_at_step(RIGHT, k)[0] == second[0].prefix)
    assert (pair.prompt_id, pair.strategy, pair.shared_prefix) == ("p1", "step_controlled", second[0].prefix)
    assert (pair.chosen, pair.rejected) == (split_at_step(RIGHT, k)[1], "9\n\\boxed{9}")
    assert stats == {"step_controlled/unbroken": 1}
    # the same rng draws as calling the pure functions directly
    rng, cfg = random.Random(3), algo.step_controlled
    pending = [g for _, gs in group for g in P.distinct_samples([g for g in gs if g.correct])]
    direct = P.step_controlled_requests(pending, cfg, rng, 0, 17000)
    assert [r for _, _, r in direct] == first


def test_weak_to_strong_builder_asks_the_weak_supervisor_once():
    group = [(problem("p1"), graded("p1", (RIGHT, True), (RIGHT, True), (RIGHT, True), (WRONG, False))),
             (problem("p2"), graded("p2", (RIGHT, True), (WRONG, False)))]  # 0.5 confidence: skipped
    f, stats = Fakes(weak={"p1": "25"}), {}
    pairs = S.build_pairs("weak_to_strong", f.ctx, group, random.Random(0), 2, stats)
    assert f.calls["weak"] == [["p1", "p2"]]
    assert stats == {"w2s/skip_low_confidence": 1, "w2s/weak": 1}  # 0.75 < overrule_at 0.8: the weak label holds
    (pair,) = pairs
    assert (pair.prompt_id, pair.chosen, pair.rejected, pair.strategy) == ("p1", WRONG, RIGHT, "weak_to_strong")


def test_unknown_strategy_is_a_config_error_listing_registered_names():
    with pytest.raises(ConfigError, match="unknown strategy 'best'") as e:
        load_config(None, ["algo.strategy=best"])
    assert ", ".join(S.strategy_names()) in str(e.value)
    with pytest.raises(ConfigError, match="unknown strategy 'best'"):
        load_config(None, ["algo.strategy={outcome: 0.5, best: 0.5}"])


def test_a_registered_strategy_is_valid_in_config_without_other_edits(monkeypatch):
    monkeypatch.setattr(S, "_REGISTRY", dict(S._REGISTRY))  # undone after the test

    with pytest.raises(ConfigError, match="unknown strategy 'longest'"):
        load_config(None, ["algo.strategy=longest"])

    @S.strategy("longest")
    def longest(ctx, group, rng, iteration, stats):
        stats["longest/calls"] = stats.get("longest/calls", 0) + 1
        out = []
        for _, gs in group:
            by_len = sorted(gs, key=lambda g: len(g.sample.response))
            out.append(PreferencePair(gs[0].sample.prompt_id, gs[0].sample.prompt, by_len[-1].sample.response,
                                      by_len[0].sample.response, strategy="longest"))
        return out

    assert load_config(None, ["algo.strategy=longest"]).algo.strategy == "longest"
    assert load_config(None, ["algo.strategy={longest: 1, outcome: 1}"]).algo.strategy == {"longest": 1, "outcome": 1}
    assert "longest" in S.strategy_names()
    stats = {}
    (pair,) = S.build_pairs("longest", Fakes().ctx, [(problem("p1"), graded("p1", ("1", True), ("22", False)))],
                            random.Random(0), 0, stats)
    assert (pair.chosen, pair.rejected, stats) == ("22", "1", {"longest/calls": 1})
    with pytest.raises(ValueError, match="already registered"):
        S.strategy("longest")(lambda *a: [])
    S.strategy("longest", replace=True)(S.outcome)
    assert S.get_strategy("longest") is S.outcome


def test_registry_imports_neither_ray_nor_torch_and_no_cycle_with_config():
    code = ("import sys\n"
            "import rayscale.algos.strategies as S\n"
            "from rayscale.config_loading import load_config\n"
            "assert load_config(None, ['algo.strategy=outcome']).algo.strategy == 'outcome'\n"
            "bad = [m for m in ('ray', 'torch') if m in sys.modules]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_a_strategy_mix_is_read_by_one_parser():
    from pathlib import Path

    from rayscale.algos.pairs import strategy_mix

    assert strategy_mix("outcome") == {"outcome": 1.0}
    assert strategy_mix({"correction": 3, "outcome": 0, "step_controlled": 1}) == {"correction": 3.0,
                                                                                   "step_controlled": 1.0}
    # nothing else in the package takes `algo.strategy` apart itself (plan, bench, validation call strategy_mix)
    package = Path(__file__).resolve().parents[1] / "rayscale"
    readers = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                     if ".items() if w > 0]" in p.read_text() or "for n, w in strategy.items()" in p.read_text())
    assert readers == [], readers
