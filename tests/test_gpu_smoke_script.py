"""benchmarks/gpu_smoke.sh without a GPU: with CUDA hidden it reports "no CUDA device", skips every GPU step with
that reason, still writes a valid JSON and exits 3; with a stand-in interpreter that claims a GPU (and answers
pytest and the benchmarks with canned files) the junit parsing, the skip rules, the merging of the benchmarks'
JSON and the failure recording are checked end to end. A few seconds each: nothing heavy runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_smoke.sh"
STEP_KEYS = ["pytest_gpu", "weight_sync", "weight_sync_nccl", "rollout", "learner_vs_trl"]


def _run(tmp_path: Path, **env: str) -> tuple[int, dict, str]:
    out = tmp_path / "smoke"
    full_env = {**os.environ, "OUT": str(out), "BUDGET_S": "120", "GPU_SMOKE_INSTALL": "0", **env}
    full_env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120)
    report = json.loads((out / "gpu_smoke.json").read_text())
    return proc.returncode, report, proc.stdout + proc.stderr


def test_without_cuda_it_says_so_and_still_writes_the_json(tmp_path):
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this holds on a GPU machine too
    rc, r, log = _run(tmp_path, GPU_SMOKE_PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    assert rc == 3, log
    assert r["schema"] == "rayscale.gpu_smoke/1" and r["status"] == "no_cuda" and r["exit_code"] == 3
    assert r["reason"].startswith("no CUDA device") and "GPU steps not run" in r["reason"]
    for key in ("versions", "cuda", "python", "dependencies", "nvidia_smi", "steps", *STEP_KEYS):
        assert key in r, key
    assert r["versions"]["torch"] == torch.__version__
    assert r["cuda"] == {"available": False, "device_count": 0, "devices": [], "reason": r["cuda"]["reason"]}
    assert r["python"]["chosen"] == sys.executable
    assert [s["key"] for s in r["steps"]] == STEP_KEYS
    assert all(s["status"] == "skipped" and s["reason"].startswith("no CUDA device") for s in r["steps"])
    assert "no CUDA device" in log and "status: no_cuda (exit 3)" in log  # the summary table


FAKE_PYTHON = '''\
#!{python}
"""A stand-in interpreter that claims one GPU: probes, pytest and the benchmarks answer with canned files."""
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
missing = [m for m in os.environ.get("FAKE_MISSING", "").split(",") if m]
if args[-1:] == ["probe"]:
    mods = {{m: "1.0" for m in ["torch", "ray", "deepspeed", "pytest", "pytest_timeout", "trl"]}}
    print(json.dumps({{
        "executable": sys.argv[0], "python": "3.12.3", "prefix": "/fake", "in_venv": True, "modules": mods,
        "missing_required": missing, "missing_optional": ["vllm"], "cuda_available": True,
        "torch": {{"importable": True, "version": "2.11.0+cu130", "cuda_build": "13.0", "cuda_available": True,
                  "device_count": 1, "nccl": "2.27.7", "cudnn": 91300,
                  "devices": [{{"index": 0, "name": "NVIDIA H200", "capability": "9.0", "memory_gib": 139.8,
                               "multiprocessors": 132}}]}}}}))
elif args[:2] == ["-m", "pytest"]:
    xml = next(a.split("=", 1)[1] for a in args if a.startswith("--junitxml="))
    Path(xml).write_text("""<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="3">
<testcase classname="tests.test_learner_gpu" name="test_zero3_dpo_with_nccl_on_one_gpu" time="12.5"/>
<testcase classname="tests.test_rollout_gpu" name="test_hf[nccl]" time="0"><skipped type="pytest.skip"
 message="NCCL sync needs two GPUs"/></testcase>
<testcase classname="tests.test_rollout_gpu" name="test_vllm[gloo]" time="0"><skipped type="pytest.skip"
 message="needs vLLM: `make test-vllm` runs these in .venv-vllm"/></testcase>
</testsuite></testsuites>""")
    print("1 passed, 2 skipped")
    sys.exit(0)
elif args[:2] == ["-m", "pip"]:  # as pip answers offline
    print("ERROR: Could not find a version that satisfies the requirement ray (from versions: none)")
    print("ERROR: No matching distribution found for ray")
    sys.exit(1)
elif args and args[0].endswith("learner_vs_trl.py"):
    print("Traceback: RuntimeError: CUDA error: out of memory")
    sys.exit(1)
elif args and args[0].endswith(".py"):
    path = args[args.index("--json") + 1]
    Path(path).write_text(json.dumps({{"fake": Path(args[0]).stem, "argv": args[1:], "ratio_vs_raw": 0.95}}))
else:
    sys.exit(2)
'''


def test_with_a_gpu_the_steps_are_run_parsed_and_merged(tmp_path):
    fake = tmp_path / "fakepython"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    rc, r, log = _run(tmp_path, GPU_SMOKE_PYTHON=str(fake))
    assert rc == 1, log
    assert r["status"] == "failed" and r["cuda"]["available"] and r["cuda"]["device_count"] == 1
    assert r["versions"]["nccl"] == "2.27.7" and r["versions"]["torch"] == "2.11.0+cu130"
    status = {s["key"]: s["status"] for s in r["steps"]}
    assert status == {"pytest_gpu": "failed", "weight_sync": "ok", "weight_sync_nccl": "skipped", "rollout": "ok",
                      "learner_vs_trl": "failed"}

    j = r["pytest_gpu"]["junit_summary"]
    assert (j["tests"], j["passed"], j["skipped"], j["unexpected_skips"]) == (3, 1, 2, 1)
    assert j["expected_skips"] == [{"test": "tests.test_rollout_gpu::test_hf[nccl]",
                                    "reason": "NCCL sync needs two GPUs"}]  # a two-GPU test on one GPU
    assert j["skips"][0]["reason"].startswith("needs vLLM")  # any other skip on a GPU machine fails the run
    assert "skipped on a GPU machine" in r["pytest_gpu"]["reason"]

    ws = r["weight_sync"]["result"]
    assert ws["fake"] == "weight_sync" and ws["argv"][:4] == ["--quick", "--sections", "toy", "--device"]
    assert r["rollout"]["result"]["argv"][:3] == ["--quick", "--device", "cuda"]
    assert r["weight_sync_nccl"]["expected"] is True and "needs 2 GPUs" in r["weight_sync_nccl"]["reason"]
    assert r["learner_vs_trl"]["rc"] == 1 and "out of memory" in "\n".join(r["learner_vs_trl"]["log_tail"])
    assert all(isinstance(r[k]["timeout_s"], int) for k in ("pytest_gpu", "weight_sync", "rollout"))


def test_a_spent_budget_skips_the_steps_and_fails_the_run(tmp_path):
    fake = tmp_path / "fakepython"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    rc, r, log = _run(tmp_path, GPU_SMOKE_PYTHON=str(fake), BUDGET_S="20")
    assert rc == 1, log
    assert all(s["reason"].startswith("budget exhausted") for s in r["steps"] if s["key"] != "weight_sync_nccl")


def test_missing_modules_offline_are_named_and_the_install_failure_explained(tmp_path):
    fake = tmp_path / "fakepython"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    rc, r, log = _run(tmp_path, GPU_SMOKE_PYTHON=str(fake), FAKE_MISSING="ray,deepspeed", GPU_SMOKE_INSTALL="1",
                      GPU_SMOKE_WHEELS=str(tmp_path / "no_wheels"))
    assert rc == 4, log
    assert r["status"] == "env_incomplete" and "ray, deepspeed" in r["reason"]
    assert r["dependencies"]["missing_required"] == ["ray", "deepspeed"]
    install = r["dependencies"]["install"]
    assert install["attempted"] and not install["succeeded"] and install["offline"]
    assert "pip install -e .[dev]" in install["method"]
    assert all(s["status"] == "skipped" and "missing required modules: ray,deepspeed" in s["reason"]
               for s in r["steps"])


def test_bad_budget_is_a_usage_error(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OUT": str(tmp_path / "o"), "BUDGET_S": "nine minutes"})
    assert proc.returncode == 2 and "BUDGET_S" in proc.stderr


def test_the_helper_needs_only_the_standard_library():
    src = (ROOT / "benchmarks" / "gpu_smoke_report.py").read_text()
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # importing it would fail
        src = {src!r}
        ns = {{"__name__": "gpu_smoke_report"}}
        exec(compile(src, "gpu_smoke_report.py", "exec"), ns)
        print(ns["probe"]()["no_cuda_reason"])
    """)
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("no CUDA device") or "torch is not importable" in proc.stdout
