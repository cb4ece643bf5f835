"""Bootstrap intervals and the paired difference used by benchmarks/real_model.py."""

import pytest

from rayscale.confidence import bootstrap_ci, paired_difference, per_problem_scores


def test_per_problem_scores_average_the_samples_of_each_problem():
    rows = [{"id": "a", "correct": True}, {"id": "a", "correct": False}, {"id": "b", "correct": True}]
    assert per_problem_scores(rows) == {"a": 0.5, "b": 1.0}


def test_the_interval_holds_the_mean_and_narrows_with_more_problems():
    small = bootstrap_ci([1, 0] * 50)
    large = bootstrap_ci([1, 0] * 500)
    for mean, low, high in (small, large):
        assert mean == 0.5 and low < 0.5 < high
    assert (large[2] - large[1]) < 0.5 * (small[2] - small[1])  # ~1/sqrt(10) as wide
    assert small[2] - small[1] == pytest.approx(2 * 1.96 * 0.05, rel=0.15)  # the binomial interval
    assert bootstrap_ci([1, 0, 1]) == bootstrap_ci([1, 0, 1])  # fixed seed: a rerun prints the same interval


def test_a_paired_difference_is_narrower_than_independent_intervals_when_models_agree():
    before = {str(i): float(i % 2) for i in range(300)}
    after = dict(before)
    for i in range(0, 40, 2):  # 20 problems fixed, none broken
        after[str(i)] = 1.0
    d = paired_difference(after, before)
    assert d["diff"] == pytest.approx(20 / 300) and d["improved"] == 20 and d["worsened"] == 0
    assert d["ci_low"] > 0  # significant paired, although the two accuracies' own intervals overlap
    _, _, high_before = bootstrap_ci(list(before.values()))
    _, low_after, _ = bootstrap_ci(list(after.values()))
    assert low_after < high_before


def test_a_change_that_goes_both_ways_is_not_significant():
    before = {str(i): float(i % 2) for i in range(300)}
    after = {k: 1.0 - v if int(k) < 40 else v for k, v in before.items()}  # 20 fixed, 20 broken
    d = paired_difference(after, before)
    assert d["diff"] == 0 and d["ci_low"] < 0 < d["ci_high"]


def test_runs_that_scored_different_problems_are_refused():
    with pytest.raises(ValueError, match="different problems"):
        paired_difference({"a": 1.0}, {"b": 1.0})
