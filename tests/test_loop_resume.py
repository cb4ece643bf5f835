"""On a 3-node Ray cluster: kill the training job (its driver) after iteration 2, resume with
checkpoint.resume=auto: iteration 3 must draw the same prompts, from the same policy version, and see the same
samples as an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import three_node_overrides
from tests.test_loop import TINY, run

pytestmark = pytest.mark.ray
RESUME = ["algo.iterations=3", "algo.eval_every=0", "checkpoint.every=1"]


def rows(run_dir):
    return {r["iteration"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def test_killed_job_resumes_exactly(three_nodes, tmp_path):
    resume = [*RESUME, *three_node_overrides(three_nodes)]
    straight = tmp_path / "straight"
    run(straight, *resume)
    expected = rows(straight)

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight / "sft_model", resumed / "sft_model")  # same stage 1, and faster
    shutil.copytree(straight / "tiny_model", resumed / "tiny_model")
    cmd = [sys.executable, "-m", "rayscale.cli", "train", *TINY, *resume, f"tracking.run_dir={resumed}"]
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = resumed / "checkpoints" / "iter_000002" / "controller.json"
    deadline = time.time() + 240
    while not marker.exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the job never checkpointed iteration 2"
    os.killpg(job.pid, signal.SIGKILL)  # no goodbye: the driver and its local Ray die mid-iteration 3
    job.wait()

    started = time.perf_counter()
    after = run(resumed, *resume)  # checkpoint.resume=auto is the default
    print(f"\nresumed run (actors up, iteration 3, final save): {time.perf_counter() - started:.1f}s")
    got = {r["iteration"]: r for r in after}
    assert sorted(got) == [1, 2, 3]  # each iteration logged once, nothing skipped
    for key in ("prompts_digest", "policy_version", "accuracy", "pairs", "samples"):
        assert got[3][key] == expected[3][key], key
    assert got[3]["learner/loss"] == pytest.approx(expected[3]["learner/loss"], rel=1e-4, abs=1e-6)
