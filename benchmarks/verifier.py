"""Verifier benchmark: agreement with labelled responses, throughput against math-verify, hostile-input latency.

(a) Agreement with the labels of ../shared/data/gsm8k_example_model_solutions.jsonl (1,319 x 4 = 5,276 solutions,
    labelled by exact match on the final number) and with the Qwen2.5-Math grader's scores on the 800 responses of
    qwen25math_math_cot_100_rm_example.jsonl. Every disagreement is listed with the reviewed judgement of who is
    right (benchmarks/verifier_reviewed.json); a new, unreviewed one is flagged. math-verify's agreement on the same
    inputs is shown for context.
(b) Responses/s of a rayscale VerifierPool with 2 workers (Ray actors, each with its own verifier process, hard
    timeouts) against math-verify's parse+verify called serially in this process, on the same inputs, in the same
    run. Also shown: the pool's engine without Ray (IsolatedVerifier) and rayscale in-process (no isolation).
(c) Worst-case latency on the hostile set (the issue's inputs plus a genuine sympy hang), through the pool; math-verify
    on the same inputs in a subprocess for comparison.

    python benchmarks/verifier.py [--quick] [--json PATH] [--workers 2] [--timeout 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rayscale.data import shared_data_dir
from rayscale.types import VerifyResult
from rayscale.verify import extract_answer, verify_response

REVIEWED = Path(__file__).with_name("verifier_reviewed.json")
GSM8K_MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
HOSTILE = {
    "python injection": "__import__('os').system('touch {sentinel}')",
    "python injection, boxed": "\\boxed{{__import__('os').system('touch {sentinel}')}}",
    "dunder walk": "\\boxed{{().__class__.__bases__[0]}}",
    "power tower 9^9^9^9": "\\boxed{{9^{{9^{{9^{{9}}}}}}}}",
    "(x+1)^(10^8)": "\\boxed{{(x+1)^{{10^{{8}}}}}}",
    "10,000 nested braces": "\\boxed{{" + "{{" * 10_000 + "1" + "}}" * 10_000 + "}}",
    "1 MB response": "x" * 1_000_000 + "\\boxed{{42}}",
    "1 MB of unclosed boxes": "\\boxed{{" * 140_000,
    "sympy hang (x+1)^9000": "\\boxed{{x^{{9000}}+1}}",
}
HANG_GOLD = "(x+1)^{9000}"


# ------------------------------------------------------------------------------------------------- data
def load_items(data: Path, quick: bool) -> tuple[list[dict], list[dict]]:
    """(gsm8k items, qwen items); each item: key, gold, response, label."""
    gsm8k, qwen = [], []
    rows = [json.loads(line) for line in (data / "gsm8k_example_model_solutions.jsonl").open()]
    for i, row in enumerate(rows[:100] if quick else rows):
        gold = extract_answer(row["ground_truth"])  # the ground truth ends "A: 18"
        for model in GSM8K_MODELS:
            sol = row[model]
            gsm8k.append({"key": f"gsm8k:{i}:{model}", "gold": gold, "response": sol["solution"],
                          "label": bool(sol["is_correct"])})
    rows = [json.loads(line) for line in (data / "qwen25math_math_cot_100_rm_example.jsonl").open()]
    for i, row in enumerate(rows[:25] if quick else rows):
        for j, (response, score) in enumerate(zip(row["response"], row["score"])):
            qwen.append({"key": f"qwen:{i}:{j}", "gold": row["gt"], "response": response, "label": bool(score),
                         "peer_pred": row["pred"][j]})
    return gsm8k, qwen


# ------------------------------------------------------------------------------------------------- runs
def run_mathverify_serial(items: list[dict]) -> tuple[list[bool], float]:
    """math-verify as its README uses it: parse gold and response, verify, default (signal) timeouts."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    start = time.perf_counter()
    verdicts = [bool(verify(parse(f"${it['gold']}$"), parse(it["response"]))) for it in items]
    return verdicts, time.perf_counter() - start


def run_pool(items: list[dict], workers: int, timeout_s: float) -> tuple[list[VerifyResult], float, float, object]:
    import ray

    from rayscale.actors.verifier import VerifierPool

    ray.init(address="local", num_cpus=max(2, workers), include_dashboard=False, log_to_driver=False)
    start = time.perf_counter()
    pool = VerifierPool(workers, timeout_s)
    startup = time.perf_counter() - start
    pool.verify([(it["gold"], it["response"]) for it in items[:64]])  # warm every actor
    start = time.perf_counter()
    results = pool.verify([(it["gold"], it["response"]) for it in items])
    return results, time.perf_counter() - start, startup, pool


def run_isolated(items: list[dict], workers: int, timeout_s: float) -> float:
    from rayscale.verify.isolation import IsolatedVerifier

    with IsolatedVerifier(workers, timeout_s) as verifier:
        verifier.wait_ready()
        verifier.verify_batch([(it["gold"], it["response"]) for it in items[:64]])
        start = time.perf_counter()
        verifier.verify_batch([(it["gold"], it["response"]) for it in items])
        return time.perf_counter() - start


def run_inprocess(items: list[dict]) -> float:
    start = time.perf_counter()
    for it in items:
        verify_response(it["gold"], it["response"])
    return time.perf_counter() - start


def run_hostile(pool, timeout_s: float, sentinel: Path, peer_limit_s: float, with_peer: bool) -> dict:
    names = list(HOSTILE)
    responses = [HOSTILE[n].format(sentinel=sentinel) for n in names]
    golds = [HANG_GOLD if n.startswith("sympy hang") else "1" for n in names]
    start = time.perf_counter()
    results = pool.verify(list(zip(golds, responses)))
    wall = time.perf_counter() - start
    rows = []
    for name, gold, response, result in zip(names, golds, responses, results):
        row = {"name": name, "status": result.status, "latency_s": round(result.latency_s, 3)}
        if with_peer:
            row["mathverify_s"] = _mathverify_in_subprocess(gold, response, peer_limit_s)
        rows.append(row)
    return {
        "timeout_s": timeout_s,
        "worst_latency_s": max(r["latency_s"] for r in rows),
        "batch_wall_s": round(wall, 3),
        "sentinel_created": sentinel.exists(),
        "items": rows,
    }


def _mathverify_in_subprocess(gold: str, response: str, limit_s: float) -> float | None:
    """Seconds math-verify needs for one hostile pair (its own 5 s signal timeouts on), None if it outlives
    `limit_s`. A subprocess, because a long C-level big-integer computation cannot be interrupted in-process."""
    code = ("import sys,json,time,logging;logging.disable(logging.CRITICAL);from math_verify import parse,verify;"
            "g,r=json.load(sys.stdin);t=time.perf_counter();verify(parse('$'+g+'$'),parse(r));"
            "print(time.perf_counter()-t)")
    try:
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps([gold, response]), text=True,
                             capture_output=True, timeout=limit_s, check=True)
        return round(float(out.stdout.strip().splitlines()[-1]), 3)
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError, ValueError, IndexError):
        return None


# ------------------------------------------------------------------------------------------------- report
def agreement(name: str, items: list[dict], ours: list[VerifyResult], peer: list[bool], reviewed: dict) -> dict:
    disagreements = []
    for it, result in zip(items, ours):
        if bool(result.correct) != it["label"]:
            review = reviewed.get(it["key"], {"right": "UNREVIEWED", "why": ""})
            disagreements.append({"key": it["key"], "gold": it["gold"], "pred": result.pred,
                                  "label": it["label"], "rayscale": bool(result.correct),
                                  "status": result.status, "right": review["right"], "why": review["why"]})
    n = len(items)
    return {
        "dataset": name,
        "n": n,
        "agreement": (n - len(disagreements)) / n if n else 0.0,
        "mathverify_agreement": sum(p == it["label"] for p, it in zip(peer, items)) / n if n else 0.0,
        "statuses": _count(r.status for r in ours),
        "disagreements": disagreements,
    }


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def print_report(report: dict) -> None:
    print("\n(a) agreement with labels")
    print(f"{'dataset':<8} {'n':>6} {'rayscale':>9} {'math-verify':>12}  disagreements (who is right)")
    for a in (report["gsm8k"], report["qwen"]):
        rights = _count(d["right"] for d in a["disagreements"])
        print(f"{a['dataset']:<8} {a['n']:>6} {a['agreement']:>9.4f} {a['mathverify_agreement']:>12.4f}  "
              f"{len(a['disagreements'])} {rights if rights else ''}")
        for d in a["disagreements"]:
            print(f"    {d['key']}: gold {d['gold']!r} pred {d['pred']!r} label={d['label']} "
                  f"rayscale={d['rayscale']} -> {d['right']}: {d['why']}")
    t = report["throughput"]
    print(f"\n(b) throughput on {t['items']} responses")
    print(f"{'what':<44} {'responses/s':>12}")
    for label, key in (("rayscale VerifierPool, 2 Ray workers", "pool_responses_per_s"),
                       ("rayscale IsolatedVerifier, 2 processes (no Ray)", "isolated_responses_per_s"),
                       ("rayscale in-process, 1 process, no timeouts", "inprocess_responses_per_s"),
                       ("math-verify parse+verify, serial, 1 process", "mathverify_serial_responses_per_s")):
        print(f"{label:<44} {t[key]:>12.1f}")
    print(f"speedup_vs_mathverify_serial = {report['speedup_vs_mathverify_serial']:.2f}x "
          f"(pool startup {t['pool_startup_s']:.1f}s, not timed)")
    h = report["hostile"]
    print(f"\n(c) hostile inputs through the pool (timeout {h['timeout_s']}s): worst latency "
          f"{h['worst_latency_s']:.2f}s, batch {h['batch_wall_s']:.2f}s, sentinel created: {h['sentinel_created']}")
    print(f"{'input':<28} {'status':<10} {'latency_s':>9} {'math-verify_s':>14}")
    for r in h["items"]:
        peer = r.get("mathverify_s", "-")
        peer = "killed" if peer is None else peer
        print(f"{r['name']:<28} {r['status']:<10} {r['latency_s']:>9.3f} {peer!s:>14}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="600 responses instead of 6,076; about a minute")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)

    data = shared_data_dir()
    if not (data / "gsm8k_example_model_solutions.jsonl").is_file():
        print(f"shared data not found in {data} (set RAYSCALE_SHARED_DATA)", file=sys.stderr)
        return 2
    reviewed = json.loads(REVIEWED.read_text()) if REVIEWED.is_file() else {}
    gsm8k, qwen = load_items(data, args.quick)
    items = gsm8k + qwen
    print(f"{len(gsm8k)} GSM8K + {len(qwen)} Qwen responses; {os.cpu_count()} CPUs", flush=True)

    peer, peer_s = run_mathverify_serial(items)
    print(f"math-verify serial: {peer_s:.1f}s", flush=True)
    ours, pool_s, startup_s, pool = run_pool(items, args.workers, args.timeout)
    print(f"rayscale pool: {pool_s:.1f}s", flush=True)
    try:
        sentinel = Path(os.environ.get("TMPDIR", "/tmp")) / f"rayscale-bench-sentinel-{os.getpid()}"
        hostile = run_hostile(pool, args.timeout, sentinel, peer_limit_s=30.0, with_peer=True)
    finally:
        pool.shutdown()
        import ray

        ray.shutdown()
    isolated_s = run_isolated(items, args.workers, args.timeout)
    inprocess_s = run_inprocess(items)

    n = len(items)
    report = {
        "quick": args.quick,
        "gsm8k": agreement("gsm8k", gsm8k, ours[: len(gsm8k)], peer[: len(gsm8k)], reviewed),
        "qwen": agreement("qwen", qwen, ours[len(gsm8k) :], peer[len(gsm8k) :], reviewed),
        "throughput": {
            "items": n,
            "workers": args.workers,
            "pool_responses_per_s": n / pool_s,
            "isolated_responses_per_s": n / isolated_s,
            "inprocess_responses_per_s": n / inprocess_s,
            "mathverify_serial_responses_per_s": n / peer_s,
            "pool_startup_s": startup_s,
        },
        "speedup_vs_mathverify_serial": (n / pool_s) / (n / peer_s),
        "hostile": hostile,
    }
    report["gsm8k_agreement"] = report["gsm8k"]["agreement"]
    report["qwen_agreement"] = report["qwen"]["agreement"]
    report["hostile_worst_latency_s"] = hostile["worst_latency_s"]
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
