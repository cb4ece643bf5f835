"""Where an iteration's wall time went (pure: the controller fills it, `rayscale bench` and benchmarks read it).

Each metrics row's `time` maps every named stage to its seconds plus `overhead`: the iteration's wall time minus
the named stages on its critical path (bookkeeping, pair logging, the console line, anything nobody named). In
sync mode every stage is on the path, so the mapping sums to the wall time. In async mode the collect stages
(rollout, verify, one per pair strategy) of an experience gathered ahead ran in the background beside the previous
iteration; they stay in the mapping (what each stage costs) but not in the path, so the loop's own stages plus
`overhead` sum to the wall time.
"""

from __future__ import annotations

from collections.abc import Mapping


def iteration_times(collect: Mapping[str, float], loop: Mapping[str, float], wall_s: float,
                    collected_ahead: bool) -> dict[str, float]:
    """`collect`: collect()'s stage seconds; `loop`: the loop's own stages; `wall_s`: the iteration's wall time;
    `collected_ahead`: the experience came from the background (async), not from this iteration's own collect."""
    on_path = sum(loop.values()) + (0.0 if collected_ahead else sum(collect.values()))
    return {**collect, **loop, "overhead": max(wall_s - on_path, 0.0)}


def critical_path_s(times: Mapping[str, float], collect_stages: set[str], collected_ahead: bool) -> float:
    """The iteration's wall time back from its `time` mapping (stages on the path plus overhead)."""
    return float(sum(v for k, v in times.items() if not (collected_ahead and k in collect_stages)))
