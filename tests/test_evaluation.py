"""accuracy_on: greedy takes one sample per problem, sampled accuracy averages over all samples of all problems."""

from rayscale.data import Problem
from rayscale.evaluation import accuracy_on
from rayscale.types import Sample, VerifyResult


class ScriptedRollout:
    """Answers request i with the responses scripted for its problem; records what was asked."""

    def __init__(self, script: dict[str, list[str]]):
        self.script, self.requests = script, []

    def generate(self, requests):
        self.requests.extend(requests)
        return [[Sample(r.prompt_id, r.prompt, "", text) for text in self.script[r.prompt_id][: r.n]]
                for r in requests]


class ExactVerifier:
    def verify(self, items):
        return [VerifyResult(response == gold, response, "ok", "") for gold, response in items]


PROBLEMS = [Problem(id="a", question="1+1=?", gold_answer="2"), Problem(id="b", question="2+2=?", gold_answer="4")]
SCRIPT = {"a": ["2", "2", "3", "2"], "b": ["5", "4", "5", "5"]}


def test_sampled_accuracy_is_the_mean_over_every_sample():
    rollout = ScriptedRollout(SCRIPT)
    acc, rows = accuracy_on(rollout, ExactVerifier(), PROBLEMS, ["p", "p"], temperature=1.0, samples_per_problem=4)
    assert [r.n for r in rollout.requests] == [4, 4]
    assert len(rows) == 8 and [r["id"] for r in rows] == ["a"] * 4 + ["b"] * 4
    assert acc == 4 / 8  # a: 3 of 4, b: 1 of 4


def test_greedy_takes_one_sample_whatever_samples_per_problem_says():
    rollout = ScriptedRollout(SCRIPT)
    acc, rows = accuracy_on(rollout, ExactVerifier(), PROBLEMS, ["p", "p"], temperature=0.0, samples_per_problem=4)
    assert [r.n for r in rollout.requests] == [1, 1] and len(rows) == 2
    assert acc == 0.5  # a's first response is right, b's is wrong
