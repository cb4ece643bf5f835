"""Every iteration accounts for its time: named stages plus `overhead` sum to the iteration's wall time (pure)."""

import time

import pytest

from rayscale.bench import figures, format_table, iteration_seconds
from rayscale.timing import critical_path_s, iteration_times

COLLECT = {"rollout", "verify", "correction"}


def timed(stages: dict[str, float], untimed_s: float) -> tuple[dict[str, float], float]:
    """Sleep through each named stage and through some unnamed work; the stage seconds and the measured wall."""
    started, times = time.perf_counter(), {}
    for name, seconds in stages.items():
        t = time.perf_counter()
        time.sleep(seconds)
        times[name] = time.perf_counter() - t
    time.sleep(untimed_s)
    return times, time.perf_counter() - started


def test_sync_stages_plus_overhead_are_the_wall_time():
    collect, wall_collect = timed({"rollout": 0.02, "verify": 0.01, "correction": 0.01}, 0.0)
    loop, wall_loop = timed({"train": 0.03, "sync": 0.01}, 0.02)  # 20 ms nobody named
    wall = wall_collect + wall_loop
    times = iteration_times(collect, loop, wall, collected_ahead=False)
    assert sum(times.values()) == pytest.approx(wall, abs=1e-9)
    assert times["overhead"] == pytest.approx(0.02, abs=0.015)  # the unnamed sleep, within scheduler noise
    assert critical_path_s(times, COLLECT, collected_ahead=False) == pytest.approx(wall, abs=1e-9)


def test_async_collect_stages_ran_beside_the_loop_and_are_off_the_path():
    collect = {"rollout": 5.0, "verify": 1.0}  # gathered ahead, during the previous iteration
    loop = {"train": 4.0, "wait_rollout": 0.5, "sync": 0.5}
    times = iteration_times(collect, loop, 5.25, collected_ahead=True)
    assert times["overhead"] == pytest.approx(0.25) and times["rollout"] == 5.0
    assert critical_path_s(times, COLLECT, collected_ahead=True) == pytest.approx(5.25)
    row = {"iteration": 2, "pairs/correction": 3, "time": times}
    assert iteration_seconds(row, async_rollout=True) == pytest.approx(5.25)


def test_bench_prints_each_stage_with_the_overhead():
    rows = []
    for it in (1, 2, 3):
        times = iteration_times({"rollout": 2.0, "verify": 1.0}, {"train": 6.0, "sync": 0.5}, 9.6, False)
        rows.append({"iteration": it, "tokens": 10, "samples": 4, "pairs": 1, "pairs/outcome": 1, "time": times,
                     "learner/tokens": 5.0, "sync/bytes": 100})
    f = figures(rows, [], num_workers=1, updates_per_iteration=1, strategy="outcome")
    assert f["stages_sync"]["overhead"] == pytest.approx(0.1)
    assert f["iteration_s_sync"] == pytest.approx(9.6)
    assert "overhead 0.10 (1.0%)" in format_table(f) and "train 6.00 (62.5%)" in format_table(f)
