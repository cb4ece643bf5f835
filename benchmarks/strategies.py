"""Pair strategies against each other, from one SFT checkpoint, with the same budget.

Stage 1 runs once (the built-in default's gold-solution SFT); then for each strategy and seed a full rayscale run
starts from that checkpoint with the same iterations, prompts, samples and learner steps, and its final policy is
scored on the held-out split: sampled accuracy (T=1) and greedy accuracy. `sft` is the checkpoint itself (no
further training), the baseline every strategy must beat. Prints a table (mean ± std over seeds), writes a PNG and,
with --json, `{strategy: {sampled_acc_mean, sampled_acc_std, greedy_acc_mean, greedy_acc_std, runs}}`.

    python benchmarks/strategies.py [--quick] [--json PATH] [--seeds 3] [--iterations 30] [key.sub=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

STRATEGIES = {
    "outcome": "outcome",
    "step_controlled": "step_controlled",
    "correction": "correction",
    "mix": "{correction: 0.5, outcome: 0.25, step_controlled: 0.25}",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, few iterations, small eval: about a few minutes")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--out", default="runs/bench_strategies", help="run directories and the plot go here")
    ap.add_argument("--strategies", default=",".join(STRATEGIES),
                    help=f"comma-separated subset of {', '.join(STRATEGIES)}")
    ap.add_argument("--reuse-sft", action="store_true",
                    help="start from <out>/sft if an earlier run of this script left it (same overrides!)")
    ap.add_argument("overrides", nargs="*", help="config overrides applied to every run")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.iterations = 1, 3
        args.overrides = ["algo.sft.steps=200", "algo.prompts_per_iteration=32", "data.eval_size=100",
                          "algo.eval_samples=1", *args.overrides]

    chosen = args.strategies.split(",")
    unknown = sorted(set(chosen) - set(STRATEGIES))
    if unknown:
        ap.error(f"--strategies: unknown {', '.join(unknown)}; expected some of {', '.join(STRATEGIES)}")

    import ray

    from rayscale import cluster
    from rayscale.config_loading import load_config
    from rayscale.controller import Trainer
    from rayscale.run_setup import prepare_run

    out = Path(args.out)
    # The whole test split (500), 4 samples a problem for sampled accuracy: one sample of 200 problems has a
    # binomial standard error of ~3.5 points, larger than the differences the comparison is about.
    base = ["tracking.wandb=false", "checkpoint.every=0", "algo.eval_every=0", "data.eval_size=500",
            "algo.eval_samples=4", *args.overrides]

    # Stage 1 once: an SFT-only run (zero iterations) leaves <run_dir>/sft_model and its held-out accuracy.
    sft_dir = out / "sft"
    cfg = load_config(None, [*base, f"tracking.run_dir={sft_dir}", "algo.iterations=0", "algo.eval_every=1",
                             "checkpoint.resume=never", "checkpoint.overwrite=true"])
    cluster.start_or_join(cfg)
    started = time.perf_counter()
    if not (args.reuse_sft and (sft_dir / "sft_model").is_dir() and (sft_dir / "metrics.jsonl").is_file()):
        Trainer(cfg, prepare_run(cfg)).run()
    sft_row = json.loads((sft_dir / "metrics.jsonl").read_text().splitlines()[0])
    results: dict[str, list[dict[str, float]]] = {
        "sft": [{"greedy": sft_row["eval/greedy_acc"], "sampled": sft_row["eval/sampled_acc"]}]}
    print(f"stage 1 done in {time.perf_counter() - started:.0f}s: greedy {sft_row['eval/greedy_acc']:.3f} "
          f"sampled {sft_row['eval/sampled_acc']:.3f}", flush=True)

    for name in chosen:
        strategy = STRATEGIES[name]
        for seed in range(args.seeds):
            run_dir = out / f"{name}_seed{seed}"
            cfg = load_config(None, [
                *base, f"tracking.run_dir={run_dir}", f"model.path={sft_dir / 'sft_model'}",
                "algo.sft.source=none", f"algo.iterations={args.iterations}", f"algo.eval_every={args.iterations}",
                f"algo.strategy={strategy}", f"algo.seed={seed}", "checkpoint.resume=never", "checkpoint.overwrite=true",
            ])
            started = time.perf_counter()
            Trainer(cfg, prepare_run(cfg)).run()
            last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
            results.setdefault(name, []).append({"greedy": last["eval/greedy_acc"], "sampled": last["eval/sampled_acc"]})
            print(f"{name} seed {seed}: greedy {last['eval/greedy_acc']:.3f} sampled {last['eval/sampled_acc']:.3f} "
                  f"({time.perf_counter() - started:.0f}s)", flush=True)
    ray.shutdown()

    summary = {name: summarize(runs) for name, runs in results.items()}
    print_table(summary, args)
    plot(summary, out / "strategies.png")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


def summarize(runs: list[dict[str, float]]) -> dict[str, float]:
    def sd(xs):
        return statistics.stdev(xs) if len(xs) > 1 else 0.0

    greedy, sampled = [r["greedy"] for r in runs], [r["sampled"] for r in runs]
    return {"sampled_acc_mean": statistics.mean(sampled), "sampled_acc_std": sd(sampled),
            "greedy_acc_mean": statistics.mean(greedy), "greedy_acc_std": sd(greedy), "runs": len(runs)}


def print_table(summary: dict[str, dict[str, float]], args) -> None:
    print(f"\nheld-out accuracy after {args.iterations} iterations, {args.seeds} seed(s) each (mean ± std)")
    print(f"{'strategy':<16}{'greedy':>18}{'sampled (T=1)':>18}{'vs sft greedy':>16}")
    base = summary["sft"]["greedy_acc_mean"]
    for name, s in summary.items():
        print(f"{name:<16}{s['greedy_acc_mean']:>10.3f} ± {s['greedy_acc_std']:.3f}"
              f"{s['sampled_acc_mean']:>10.3f} ± {s['sampled_acc_std']:.3f}"
              f"{100 * (s['greedy_acc_mean'] - base):>+14.1f}pt")


def plot(summary: dict[str, dict[str, float]], path: Path) -> None:
    from rayscale.tracking import plot_accuracy_bars

    names = list(summary)
    bars = {label: ([summary[n][f"{key}_acc_mean"] for n in names], [summary[n][f"{key}_acc_std"] for n in names])
            for key, label in (("greedy", "greedy"), ("sampled", "sampled (T=1)"))}
    plot_accuracy_bars(path, names, bars, "held-out accuracy")
    print(f"plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
