"""The Python half of benchmarks/gpu_smoke.sh: standard library only, so any python3 on the machine can run it.

    probe                      print what this interpreter has: torch, CUDA, NCCL, GPUs, rayscale's dependencies
    choose OUT ROOT BUDGET T0 PATH=PROBE...   pick the interpreter from the probes, write OUT/environment.json
    install-note OUT METHOD RC SECONDS LOG    add an install attempt (and why it failed) to environment.json
    record OUT NAME KEY ...    write OUT/steps/NAME.json, one step of the smoke run (status, rc, seconds, files)
    junit XML                  print pass/fail/skip counts of a pytest --junitxml file (skips with their reasons)
    nvidia-smi OUT             run nvidia-smi (with a timeout) and write OUT/nvidia_smi.json
    finalize OUT               merge OUT/*.json and OUT/steps/*.json into OUT/gpu_smoke.json, print a summary
                               table, exit with the smoke run's exit status (see gpu_smoke.sh)

`probe` is the one command run by the interpreter under test (it imports torch when it can); the others are run
by whatever python3 the script found first and never import anything outside the standard library.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

SCHEMA = "rayscale.gpu_smoke/1"
# module -> distribution (for its version). Required: rayscale's dependencies and what the gpu tests import.
REQUIRED = {
    "torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers", "deepspeed": "deepspeed",
    "ray": "ray", "datasets": "datasets", "sympy": "sympy", "math_verify": "math-verify", "wandb": "wandb",
    "pydantic": "pydantic", "yaml": "pyyaml", "httpx": "httpx", "tenacity": "tenacity", "tqdm": "tqdm",
    "rich": "rich", "matplotlib": "matplotlib", "numpy": "numpy", "pytest": "pytest", "aiohttp": "aiohttp",
}
# Optional: the run goes on without them, and the JSON says what each one costs.
OPTIONAL = {
    "pytest_timeout": ("pytest-timeout", "pytest runs without a per-test timeout"),
    "trl": ("trl", "benchmarks/learner_vs_trl.py cannot run (it measures TRL's DPOTrainer)"),
    "vllm": ("vllm", "the vLLM gpu test skips, which fails the smoke run"),
    "accelerate": ("accelerate", "TRL needs it"),
}
# Steps in their order in the summary; KEY is the top-level key of each in gpu_smoke.json.
STEP_KEYS = ["pytest_gpu", "weight_sync", "weight_sync_nccl", "rollout", "learner_vs_trl"]
# A gpu test may skip for these reasons only, and only on a machine with fewer GPUs than the reason names.
EXPECTED_SKIP = re.compile(r"\b(two|2) GPUs\b", re.IGNORECASE)

EXIT = {"ok": 0, "failed": 1, "error": 2, "no_cuda": 3, "env_incomplete": 4}


# ---------------------------------------------------------------------------------------------------- probe
def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def probe() -> dict:
    out: dict = {"executable": sys.executable, "python": platform.python_version(), "prefix": sys.prefix,
                 "in_venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix)}
    modules = {}
    for mod, dist in REQUIRED.items():
        modules[mod] = (_version(dist) or "present") if importlib.util.find_spec(mod) else None
    for mod, (dist, _) in OPTIONAL.items():
        modules[mod] = (_version(dist) or "present") if importlib.util.find_spec(mod) else None
    out["modules"] = modules
    out["missing_required"] = [m for m in REQUIRED if modules[m] is None]
    out["missing_optional"] = [m for m in OPTIONAL if modules[m] is None]
    t: dict = {}
    try:
        import torch
    except Exception as e:  # noqa: BLE001 (a broken torch is a finding, not a crash)
        t = {"importable": False, "error": f"{type(e).__name__}: {e}"}
        out["torch"], out["cuda_available"] = t, False
        out["no_cuda_reason"] = f"torch is not importable here ({t['error']})"
        return out
    t = {"importable": True, "version": torch.__version__, "cuda_build": torch.version.cuda,
         "hip_build": getattr(torch.version, "hip", None)}
    try:
        avail = bool(torch.cuda.is_available())
    except Exception as e:  # noqa: BLE001
        avail, t["cuda_error"] = False, f"{type(e).__name__}: {e}"
    t["cuda_available"] = avail
    t["device_count"] = torch.cuda.device_count() if avail else 0
    t["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    if avail:
        devs = []
        for i in range(t["device_count"]):
            p = torch.cuda.get_device_properties(i)
            devs.append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                         "memory_gib": round(p.total_memory / (1 << 30), 1),
                         "multiprocessors": p.multi_processor_count})
        t["devices"] = devs
        t["bf16_supported"] = bool(torch.cuda.is_bf16_supported())
        try:
            t["cudnn"] = torch.backends.cudnn.version()
        except Exception:  # noqa: BLE001
            t["cudnn"] = None
    try:
        import torch.distributed as dist

        t["nccl_available"] = bool(dist.is_available() and dist.is_nccl_available())
    except Exception:  # noqa: BLE001
        t["nccl_available"] = False
    try:
        v = torch.cuda.nccl.version() if t.get("cuda_build") else None
        t["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else (str(v) if v is not None else None)
    except Exception as e:  # noqa: BLE001
        t["nccl"], t["nccl_error"] = None, f"{type(e).__name__}: {e}"
    out["torch"], out["cuda_available"] = t, avail
    if not avail:
        if not t["cuda_build"]:
            out["no_cuda_reason"] = f"no CUDA device: torch {t['version']} is a CPU build"
        elif t.get("cuda_visible_devices") == "":
            out["no_cuda_reason"] = "no CUDA device: CUDA_VISIBLE_DEVICES is empty"
        else:
            out["no_cuda_reason"] = (f"no CUDA device: torch {t['version']} (CUDA {t['cuda_build']}) sees none"
                                     + (f" ({t['cuda_error']})" if t.get("cuda_error") else ""))
    return out


# ---------------------------------------------------------------------------------------------------- junit
def junit(path: str, device_count: int = 1) -> dict:
    """Counts and per-test outcomes of a pytest --junitxml file. A skip is a failure of the smoke run unless its
    reason is one EXPECTED_SKIP admits on this machine (a two-GPU test on a one-GPU machine)."""
    p = Path(path)
    if not p.is_file():
        return {"parsed": False, "error": f"{path} was not written"}
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as e:
        return {"parsed": False, "error": f"{path}: {e}"}
    counts = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures, skips, expected_skips, passed = [], [], [], []
    for case in root.iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}".lstrip(":")
        counts["tests"] += 1
        kids = {c.tag: c for c in case}
        if "failure" in kids or "error" in kids:
            tag = "failure" if "failure" in kids else "error"
            counts["failed" if tag == "failure" else "errors"] += 1
            msg = (kids[tag].get("message") or (kids[tag].text or "")).strip()
            failures.append({"test": test_id, "kind": tag, "message": msg[:2000]})
        elif "skipped" in kids:
            counts["skipped"] += 1
            reason = (kids["skipped"].get("message") or (kids["skipped"].text or "")).strip()
            entry = {"test": test_id, "reason": reason}
            (expected_skips if device_count < 2 and EXPECTED_SKIP.search(reason) else skips).append(entry)
        else:
            counts["passed"] += 1
            passed.append({"test": test_id, "seconds": float(case.get("time") or 0)})
    return {"parsed": True, **counts, "unexpected_skips": len(skips), "failures": failures,
            "skips": skips, "expected_skips": expected_skips, "passed_tests": passed}


# ---------------------------------------------------------------------------------------------------- nvidia-smi
def nvidia_smi(out_dir: str, timeout: float = 20) -> dict:
    res: dict = {}
    fields = "index,name,uuid,memory.total,memory.used,driver_version,compute_cap,pci.bus_id"
    try:
        q = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        res = {"available": False, "error": "nvidia-smi not found on PATH"}
    except subprocess.TimeoutExpired:
        res = {"available": False, "error": f"nvidia-smi did not answer in {timeout:g} s"}
    else:
        if q.returncode != 0:
            res = {"available": False, "rc": q.returncode, "error": (q.stderr or q.stdout).strip()[-2000:]}
        else:
            names = fields.split(",")
            gpus = [dict(zip(names, (x.strip() for x in line.split(",")))) for line in q.stdout.splitlines()
                    if line.strip()]
            res = {"available": True, "gpus": gpus, "driver_version": gpus[0]["driver_version"] if gpus else None}
            try:
                full = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=timeout)
                res["text"] = full.stdout.splitlines()
                m = re.search(r"CUDA Version:\s*([\d.]+)", full.stdout)
                res["driver_cuda_version"] = m.group(1) if m else None
            except (subprocess.TimeoutExpired, OSError) as e:
                res["text_error"] = str(e)
    Path(out_dir, "nvidia_smi.json").write_text(json.dumps(res, indent=2))
    return res


# ---------------------------------------------------------------------------------------------------- choose
def _git(root: str) -> dict:
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "note": "not a git checkout here (or git missing)"}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "changed_files": len(status.splitlines()) if status else 0}


def choose(out_dir: str, root: str, budget: str, started: str, pairs: list[str]) -> None:
    """pairs: CANDIDATE=PROBE_FILE. Pick the interpreter: CUDA first, then fewest missing required modules, then
    the order given; write OUT/environment.json; print `path|cuda|device_count|in_venv|missing required|missing
    optional|no-CUDA reason` for the shell."""
    cands = []
    for i, pair in enumerate(pairs):
        path, _, file = pair.partition("=")
        p = _load(Path(file)) if file else None
        if p is None:
            err_file = Path(file + ".err") if file else None
            err = err_file.read_text(errors="replace").strip()[-500:] if err_file and err_file.is_file() else ""
            cands.append({"path": path, "usable": False, "order": i,
                          "error": err or ("the probe printed no JSON" if file else "not found or not executable")})
        else:
            cands.append({"path": path, "usable": True, "order": i, "probe": p})
    usable = [c for c in cands if c["usable"]]
    ranked = sorted(usable, key=lambda c: (not c["probe"]["cuda_available"], not c["probe"]["torch"]["importable"],
                                           len(c["probe"]["missing_required"]), c["order"]))
    chosen = ranked[0]["probe"] if ranked else {}
    env_path = Path(out_dir, "environment.json")
    env = _load(env_path) or {}
    # by path: a second call (the probe after an install) updates its interpreter's line, keeps the others
    summaries = {c["path"]: c for c in env.get("candidates", [])}
    for c in cands:
        p = c.get("probe", {})
        summaries[c["path"]] = {"path": c["path"], "executable": p.get("executable"),
                                "torch": (p.get("torch") or {}).get("version"),
                                "cuda_available": p.get("cuda_available"),
                                "missing_required": p.get("missing_required"),
                                **({"error": c["error"]} if not c["usable"] else {})}
    env.update({
        "started_epoch": float(started), "budget_s": int(budget), "git": env.get("git") or _git(root),
        "candidates": list(summaries.values()),
        "chosen": chosen,
        "how": ("the first candidate with CUDA and the fewest missing modules" if chosen.get("cuda_available")
                else "no candidate sees a CUDA device" if chosen else "no candidate could be probed"),
    })
    if not chosen:
        env["no_cuda_reason"] = "no python with torch found (" + ", ".join(c["path"] for c in cands) + ")"
    env_path.write_text(json.dumps(env, indent=2))
    t = chosen.get("torch") or {}
    reason = chosen.get("no_cuda_reason") or env.get("no_cuda_reason") or ""
    print("|".join([chosen.get("executable") or "", "1" if chosen.get("cuda_available") else "0",
                    str(t.get("device_count") or 0), "1" if chosen.get("in_venv") else "0",
                    ",".join(chosen.get("missing_required") or []), ",".join(chosen.get("missing_optional") or []),
                    reason.replace("|", "/")]))


_OFFLINE = re.compile(r"Network is unreachable|Failed to establish a new connection|Temporary failure in name "
                      r"resolution|No matching distribution found|Could not find a version|NewConnectionError|"
                      r"Name or service not known|ConnectTimeout|timed out", re.IGNORECASE)


def install_note(out_dir: str, method: str, rc: str, seconds: str, log: str) -> None:
    """Attach the install attempt to OUT/environment.json (with a guess at why it failed)."""
    env_path = Path(out_dir, "environment.json")
    env = _load(env_path) or {}
    note: dict = {"attempted": True, "method": method, "rc": int(rc), "seconds": round(float(seconds), 1),
                  "log": log, "succeeded": rc == "0"}
    if rc != "0":
        text = Path(log).read_text(errors="replace") if Path(log).is_file() else ""
        note["offline"] = bool(_OFFLINE.search(text))
        note["reason"] = ("pip could not reach a package index (this machine is offline): bring the missing "
                          "packages as wheels in GPU_SMOKE_WHEELS" if note["offline"] else f"pip exit status {rc}")
        note["log_tail"] = text.splitlines()[-15:]
    env["install"] = note
    env_path.write_text(json.dumps(env, indent=2))


# ---------------------------------------------------------------------------------------------------- steps
def record(out_dir: str, name: str, key: str, fields: list[str]) -> None:
    """fields: k=v pairs (rc, seconds, timeout_s as numbers; expected=1|0 as a bool: a skip that does not fail the
    run; status, command, log, json, junit, reason as strings)."""
    step: dict = {"name": name, "key": key}
    for f in fields:
        k, _, v = f.partition("=")
        if k == "expected":
            step[k] = v == "1"
        elif k in ("rc", "seconds", "timeout_s"):
            try:
                step[k] = round(float(v), 1) if k == "seconds" else int(v)
            except ValueError:
                step[k] = None
        else:
            step[k] = v
    d = Path(out_dir, "steps")
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{key}.json").write_text(json.dumps(step, indent=2))


def _tail(path: str | None, lines: int = 40) -> list[str]:
    if not path or not Path(path).is_file():
        return []
    return Path(path).read_text(errors="replace").splitlines()[-lines:]


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _finish_step(step: dict, device_count: int) -> dict:
    """Turn a step record into its entry in gpu_smoke.json: status decided, result and log tail attached."""
    status, rc = step.get("status"), step.get("rc")
    if status == "ran":  # the script ran it; what it left decides
        if rc in (124, 137):
            status, step["reason"] = "timeout", f"killed after its {step.get('timeout_s')} s timeout"
        elif step.get("junit"):
            j = junit(step["junit"], device_count)
            step["junit_summary"] = j
            if not j["parsed"]:
                status, step["reason"] = "failed", j["error"] + f" (pytest exit status {rc})"
            elif j["tests"] == 0:
                status, step["reason"] = "failed", "no gpu test was collected"
            elif j["failed"] or j["errors"] or j["unexpected_skips"]:
                status = "failed"
                step["reason"] = (f"{j['failed']} failed, {j['errors']} errors, {j['unexpected_skips']} skipped on a "
                                  "GPU machine (a gpu test that skips here is a failure)")
            elif rc != 0:
                status, step["reason"] = "failed", f"pytest exit status {rc}"
            else:
                status = "ok"
        elif rc != 0:
            status, step["reason"] = "failed", f"exit status {rc}"
        else:
            res = _load(Path(step["json"])) if step.get("json") else None
            if res is None:
                status, step["reason"] = "failed", f"exit status 0 but no JSON at {step.get('json')}"
            else:
                status, step["result"] = "ok", res
    step["status"] = status
    if status in ("failed", "timeout"):
        step["log_tail"] = _tail(step.get("log"))
    return step


def finalize(out_dir: str) -> int:
    out = Path(out_dir)
    env = _load(out / "environment.json") or {"error": "the environment probe wrote nothing (see logs/)"}
    smi = _load(out / "nvidia_smi.json") or {"available": False, "error": "not run"}
    chosen = env.get("chosen") or {}
    torch_info = chosen.get("torch") or {}
    device_count = torch_info.get("device_count") or 0
    started = float(env.get("started_epoch") or time.time())
    report: dict = {
        "schema": SCHEMA,
        "status": None, "exit_code": None, "reason": None,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(time.time() - started, 1),
        "budget_s": env.get("budget_s"),
        "host": {"hostname": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "git": env.get("git"),
        "versions": {
            "python": chosen.get("python"), "torch": torch_info.get("version"),
            "cuda_build": torch_info.get("cuda_build"), "cudnn": torch_info.get("cudnn"),
            "nccl": torch_info.get("nccl"), "driver": smi.get("driver_version"),
            "driver_cuda": smi.get("driver_cuda_version"),
        },
        "cuda": {"available": bool(chosen.get("cuda_available")), "device_count": device_count,
                 "devices": torch_info.get("devices", []), "reason": chosen.get("no_cuda_reason")},
        "python": {"chosen": chosen.get("executable"), "how": env.get("how"),
                   "candidates": env.get("candidates", [])},
        "dependencies": {"modules": chosen.get("modules"), "missing_required": chosen.get("missing_required"),
                         "missing_optional": [{"module": m, "effect": OPTIONAL[m][1]}
                                              for m in chosen.get("missing_optional") or [] if m in OPTIONAL],
                         "install": env.get("install")},
        "nvidia_smi": smi,
        "steps": [],
    }
    steps = {}
    for f in sorted((out / "steps").glob("*.json")) if (out / "steps").is_dir() else []:
        s = _load(f)
        if s:
            steps[s["key"]] = _finish_step(s, device_count)
    for key in STEP_KEYS + sorted(set(steps) - set(STEP_KEYS)):
        if key in steps:
            s = steps[key]
            report[key] = s
            report["steps"].append({"key": key, "status": s["status"], "seconds": s.get("seconds"),
                                    "reason": s.get("reason") or s.get("note")})

    # The run's status: no CUDA, then a broken environment, then any failed step.
    # A skipped step is a failure too, unless the script marked it expected (not selected; NCCL on one GPU).
    bad = [s for s in report["steps"] if s["status"] in ("failed", "timeout", "error")
           or (s["status"] == "skipped" and not steps[s["key"]].get("expected"))]
    if env.get("error"):
        status, reason = "error", env["error"]
    elif not chosen.get("cuda_available"):
        status = "no_cuda"
        reason = chosen.get("no_cuda_reason") or env.get("no_cuda_reason") or "no CUDA device"
        if not reason.startswith("no CUDA device"):
            reason = "no CUDA device: " + reason
        reason += "; GPU steps not run"
    elif chosen.get("missing_required"):
        status = "env_incomplete"
        reason = (f"missing required modules {', '.join(chosen['missing_required'])} and no install succeeded "
                  "(offline?); GPU steps not run")
    elif bad:
        status, reason = "failed", "; ".join(f"{s['key']}: {s['reason'] or s['status']}" for s in bad)
    elif not report["steps"]:
        status, reason = "failed", "no step ran (GPU_SMOKE_STEPS selected none?)"
    else:
        status, reason = "ok", "every step passed"
    report["status"], report["reason"], report["exit_code"] = status, reason, EXIT[status]
    (out / "gpu_smoke.json").write_text(json.dumps(report, indent=2))
    _print_summary(report, out / "gpu_smoke.json")
    return EXIT[status]


def _print_summary(r: dict, path: Path) -> None:
    v = r["versions"]
    gpus = ", ".join(f"{d['name']} ({d['memory_gib']} GiB)" for d in r["cuda"]["devices"]) or "none"
    print("\n=== GPU smoke summary ===")
    print(f"python  {r['python']['chosen'] or 'none'}")
    print(f"torch   {v['torch'] or '-'}  CUDA build {v['cuda_build'] or '-'}  NCCL {v['nccl'] or '-'}  "
          f"driver {v['driver'] or '-'}  GPUs: {gpus}")
    missing = r["dependencies"]["missing_required"]
    if missing:
        print(f"missing required modules: {', '.join(missing)}")
    opt = [m["module"] for m in r["dependencies"]["missing_optional"]]
    if opt:
        print(f"missing optional modules: {', '.join(opt)}")
    print(f"\n{'step':<18}{'status':<9}{'seconds':>8}  detail")
    for s in r["steps"]:
        secs = "-" if s["seconds"] is None else f"{s['seconds']:.0f}"
        detail = (s["reason"] or "")
        key = s["key"]
        if s["status"] == "ok" and key == "pytest_gpu":
            j = r[key]["junit_summary"]
            detail = (f"{j['passed']} passed, {j['skipped']} skipped ({len(j['expected_skips'])} expected on "
                      f"{r['cuda']['device_count']} GPU)")
        elif s["status"] == "ok":
            res = r[key].get("result") or {}
            figures = {k: res[k] for k in ("ratio_vs_raw", "speedup_vs_per_tensor", "ratio_vs_generate",
                                           "ratio_vs_trl") if isinstance(res.get(k), (int, float))}
            detail = "  ".join(f"{k}={x:.2f}" for k, x in figures.items())
        print(f"{key:<18}{s['status']:<9}{secs:>8}  {detail[:160]}")
    print(f"\nstatus: {r['status']} (exit {r['exit_code']}): {r['reason']}")
    print(f"elapsed {r['elapsed_s']:.0f} s of a {r['budget_s']} s budget; report: {path}")


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "probe":
        print(json.dumps(probe()))
        return 0
    if cmd == "junit":
        count = int(rest[1]) if len(rest) > 1 else 1
        print(json.dumps(junit(rest[0], count), indent=2))
        return 0
    if cmd == "nvidia-smi":
        nvidia_smi(rest[0])
        return 0
    if cmd == "record":
        record(rest[0], rest[1], rest[2], rest[3:])
        return 0
    if cmd == "choose":
        choose(rest[0], rest[1], rest[2], rest[3], rest[4:])
        return 0
    if cmd == "install-note":
        install_note(*rest[:5])
        return 0
    if cmd == "finalize":
        return finalize(rest[0])
    print(f"unknown command {cmd!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
