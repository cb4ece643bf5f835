"""Bad inputs a user makes, answered before anything starts: what is wrong, with which key or file and line, and
what to do; exit status 2, never a traceback, with and without --dry-run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rayscale.cli", "train", "tracking.wandb=false", *args],
                          capture_output=True, text=True, timeout=300)


def _refused(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "configuration valid" not in r.stdout
    for w in words:
        assert w in r.stderr, (w, r.stderr)


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_model_path_that_does_not_exist(tmp_path, dry_run):
    _refused(_train(f"model.path={tmp_path}/nonexistent", f"tracking.run_dir={tmp_path}/run",
                    *(["--dry-run"] if dry_run else [])), "model.path=", "nonexistent: no such directory")


def test_a_model_directory_without_a_tokenizer_or_weights(tmp_path, tiny_model_dir):
    no_tok = tmp_path / "no_tokenizer"
    no_tok.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(f"{tiny_model_dir}/{f}", no_tok / f)
    _refused(_train(f"model.path={no_tok}", f"tracking.run_dir={tmp_path}/run"), "no tokenizer", "save_pretrained")
    (no_tok / "model.safetensors").unlink()
    _refused(_train(f"model.path={no_tok}", "--dry-run"), "no weights")
    _refused(_train("teacher.backend=local", f"teacher.local.model_path={tmp_path}", "--dry-run"),
             "teacher.local.model_path=", "no config.json", "rayscale model")


def test_a_data_path_that_does_not_exist(tmp_path):
    _refused(_train("data.source=gsm8k", f"data.path={tmp_path}/gsm8k.jsonl", "--dry-run"),
             "gsm8k.jsonl: no such file")


def test_a_gsm8k_row_without_its_final_answer_line(tmp_path, shared_data):
    rows = [json.loads(line) for line in (shared_data / "gsm8k_test.jsonl").read_text().splitlines()[:3]]
    rows[1]["answer"] = rows[1]["answer"].replace("####", "")
    bad = tmp_path / "gsm8k.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _refused(_train("data.source=gsm8k", f"data.path={bad}", "--dry-run"), f"{bad}:2", "'####")
