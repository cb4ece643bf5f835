"""95% bootstrap intervals for held-out accuracy, and for the per-problem paired difference of two models.

Accuracy on a few hundred problems moves by several points between runs of the same model; a claim that a model
got better needs an interval. Per problem, a model's score is its mean correctness over its samples (1 for greedy).
The paired difference resamples *problems*, keeping each problem's two scores together: two models that agree on
most problems give a much narrower interval for their difference than two independent intervals would suggest.
Percentile bootstrap, a fixed seed so a rerun prints the same interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_RESAMPLES = 10_000


def per_problem_scores(rows: Sequence[Mapping]) -> dict[str, float]:
    """Sample rows (`id`, `correct`) -> problem id -> mean correctness."""
    hits: dict[str, list[bool]] = {}
    for r in rows:
        hits.setdefault(str(r["id"]), []).append(bool(r["correct"]))
    return {pid: sum(v) / len(v) for pid, v in hits.items()}


def bootstrap_ci(scores: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of `scores` (one per problem)."""
    x = np.asarray(scores, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_ci: no scores")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(x.mean()), float(low), float(high)


def paired_difference(after: Mapping[str, float], before: Mapping[str, float], resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0) -> dict[str, float]:
    """after − before on the problems both scored: mean, 95% interval, and how many problems went each way."""
    if set(after) != set(before):
        missing = sorted(set(after) ^ set(before))[:3]
        raise ValueError(f"paired_difference: the two runs scored different problems (e.g. {missing})")
    ids = sorted(after)
    diff = [after[i] - before[i] for i in ids]
    mean, low, high = bootstrap_ci(diff, resamples, seed)
    return {"diff": mean, "ci_low": low, "ci_high": high, "problems": len(ids),
            "improved": sum(d > 0 for d in diff), "worsened": sum(d < 0 for d in diff)}
