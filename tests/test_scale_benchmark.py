"""benchmarks/scale.py's pure parts: the simulated answer lengths and which labelled solution a sample is."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scale(shared_data):
    spec = importlib.util.spec_from_file_location("scale", ROOT / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["scale"] = module
    spec.loader.exec_module(module)
    return module


def test_lengths_span_100_to_2000_tokens_in_the_order_of_the_texts(scale):
    lengths = scale.scaled_lengths(["ab", "abcd", "a" * 102])
    assert lengths == {"ab": 100, "abcd": 138, "a" * 102: 2000}


def test_a_sample_is_a_labelled_solution_fixed_by_prompt_and_seed(scale):
    work = scale.Workload()
    assert len(work.questions) == 1319 and all(len(q) == 4 for q in work.questions)
    assert min(work.lengths.values()) == 100 and max(work.lengths.values()) == 2000
    first = [work.solution("p7", 11, j) for j in range(8)]
    assert first == [work.solution("p7", 11, j) for j in range(8)]  # the engine that serves it does not matter
    assert {t for t, _ in work.questions[work.question("p7")]} >= set(first)
    assert len({work.solution("p7", seed, 0) for seed in range(40)}) > 1  # the seed picks among the four


def test_the_scheduling_bound_of_one_engine_is_full_and_of_any_is_a_fraction(scale):
    work = scale.Workload()
    assert scale.scheduling_bound(work, 1, 4, 4, "dynamic") == pytest.approx(1.0)  # one engine never waits
    for dispatch in ("dynamic", "fixed"):
        assert 0.5 < scale.scheduling_bound(work, 8, 4, 4, dispatch) <= 1.0
