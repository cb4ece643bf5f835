"""Rollouts at a lab's scale, simulated on one machine: the real controller (`Trainer.run_from`, async mode) and the
real `RolloutManager` (its dispatch) over 1, 8, 64 and 256 simulated engines, in one run, three ways: `fixed`
(fixed shares, `rollout.dispatch=fixed`, stages one after another: the `baseline`), `dynamic` (dynamic dispatch)
and `streaming` (dynamic dispatch and `algo.stream_stages`: each chunk graded as it comes back, the teacher asked
while other chunks generate; the JSON's main figures).

What is real and what is simulated:

    real        Trainer.run_from (async mode: iteration t+1's collect beside iteration t's train), its collect
                (prompts drawn and rendered with the tiny model's chat template, grading bookkeeping, the
                `correction` pair builder, the streaming stages), RolloutManager.generate (chunking, ray.wait dispatch, gathering),
                the metrics rows (`time.*`, `tokens`), Ray's transport of every request and result
    simulated   engines: one Ray actor (num_cpus=0, asyncio) hosts many virtual engines; the manager holds one
                small proxy per engine whose `generate.remote` is the host's `generate.remote(engine, ...)`. A
                virtual engine serves one call at a time (as a RolloutWorker actor does) and answers after
                sum(tokens) / rate: an engine at its rated throughput, whatever its batch. Each sample is a
                labelled GSM8K solution (../shared/data/gsm8k_example_model_solutions.jsonl, 1,319 questions x 4
                models' solutions), picked by the request's seed, with its length scaled linearly from the
                shortest..longest solution to 100..2,000 tokens (the long tail of GSM8K/MATH answers); token ids
                and log-probs travel as compact arrays (4 bytes each), the size a real Sample's lists take
                verifier   one actor: `procs` processes (2 per engine) at `--verify-ms` per response, verdict = the label
                teacher    one actor: latency per request drawn from a lognormal (median `--teacher-s`, sigma 0.5),
                           at most `--teacher-cap` requests at once; the correction is the question's gold solution
                learner    in the controller: a DPO step of 8 x params x pair tokens / (engines x 400 TFLOP/s x 40%)
                           (one learner GPU per engine); a sync of 2 bytes x params at `--sync-gbps` GB/s

Time is scaled down by `--speedup` (every simulated duration divided by it; default 4, --quick 8), so that a run
takes minutes, not an hour: the controller's own CPU work is NOT scaled, so it weighs `speedup` times more against the
simulated stages than it would on a real cluster (its CPU seconds are reported unscaled, for that comparison).

Workload per iteration: `--prompts-per-engine` (16) x engines prompts, `--samples` (4) samples each, the `correction`
strategy (up to 2 wrong samples per prompt to the teacher); one request per chunk (`rollout.chunk_samples` =
samples), `rollout.chunks_in_flight` at its default.

Figures per engine count (the first iteration of each run excluded: it has nothing collected ahead; and the last,
which has no next iteration to collect beside it):

    rollout_efficiency                 tokens generated / (engines x rate x speedup x rollout stage seconds)
    iteration_vs_longest_stage_async   iteration seconds / its longest stage (rollout, verify, correction,
                                       train, sync): 1.0 is perfect overlap. Streaming stages overlap each
                                       other, so for `streaming` the yardstick is the longest stage as each
                                       stage takes on its own: the `dynamic` run's (same dispatch, no streaming)
    stream_busy_s                      streaming: seconds during which the verify / teacher stage had a call
                                       running, per iteration (they run beside the rollout)
    controller_cpu_s                   the driver process's CPU seconds per iteration (all its threads)
    controller_peak_mb                 the driver's peak RSS during the run (VmHWM, reset before each run)
    driver_mb                          MB through the driver per iteration: requests and results of every
                                       simulated actor (pickled sizes, counted by the actors) + the pairs to the
                                       learner
    scheduling_bound                   (`bound eff`) the dispatch policy's efficiency with zero overhead: an event
                                       simulation of the same Dispatch on a batch of the same workload, the
                                       limit the measured rollout_efficiency approaches on an idle controller

    python benchmarks/scale.py [--quick] [--json out.json] [--engines 1,8,64,256]

The machine this runs on is a shared 2-core box: figures are loaded-machine figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import heapq
import json
import math
import os
import pickle
import random
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import fmean as mean
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rayscale.data import shared_data_dir  # noqa: E402 - after the path insert, as a script

SOLUTIONS = shared_data_dir() / "gsm8k_example_model_solutions.jsonl"
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
MIN_TOKENS, MAX_TOKENS = 100, 2000
SAMPLE_BYTES = 250  # a pickled Sample beside its text, prompt, ids and log-probs (measured; lists of ids and
# log-probs, as real engines return, take ~12 bytes a token instead of these arrays' 8)
STAGES = ("rollout", "verify", "correction", "train", "sync")


# ------------------------------------------------------------------------------------------------ the workload
def load_solutions(path: Path = SOLUTIONS) -> tuple[list[list[tuple[str, bool]]], list[str]]:
    """Per question, its 4 labelled solutions (text, correct); and each question's gold solution."""
    rows = [json.loads(line) for line in path.open()]
    return [[(r[m]["solution"], bool(r[m]["is_correct"])) for m in MODELS] for r in rows], [r["ground_truth"]
                                                                                           for r in rows]


def scaled_lengths(texts: list[str]) -> dict[str, int]:
    """Token length of each text: its character count mapped linearly onto MIN_TOKENS..MAX_TOKENS."""
    lo, hi = min(map(len, texts)), max(map(len, texts))
    return {t: MIN_TOKENS + round((len(t) - lo) * (MAX_TOKENS - MIN_TOKENS) / max(hi - lo, 1)) for t in texts}


def pick(key: str, modulus: int) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % modulus


class Workload:
    """Which labelled solution a sample is: question from the prompt id, solution from (seed, sample index)."""

    def __init__(self):
        self.questions, self.gold = load_solutions()
        self.lengths = scaled_lengths([t for q in self.questions for t, _ in q])
        self.label = {t: ok for q in self.questions for t, ok in q}
        chars = sum(len(t) for t in self.lengths)
        self.tokens_per_char = sum(self.lengths.values()) / chars

    def question(self, prompt_id: str) -> int:
        return pick(prompt_id, len(self.questions))

    def solution(self, prompt_id: str, seed: int, j: int) -> str:
        return self.questions[self.question(prompt_id)][pick(f"{seed}:{j}", len(MODELS))][0]


def scheduling_bound(work: Workload, engines: int, prompts_per_engine: int, samples: int, dispatch: str) -> float:
    """The dispatch policy's own rollout efficiency on this workload, with no overhead at all: an event simulation
    of the same `Dispatch` (rayscale.rollout.scheduling, the manager's defaults) over engines that serve a chunk in
    sum(tokens) / rate, every Ray round trip and controller step taking no time. The physical limit of the policy,
    which a loaded machine's figures do not move."""
    from rayscale.config import RolloutConfig
    from rayscale.rollout.scheduling import Dispatch

    rng = random.Random(engines)
    requests = [(f"bound-{k}", rng.getrandbits(62)) for k in range(prompts_per_engine * engines)]
    tokens = [sum(work.lengths[work.solution(p, seed, j)] for j in range(samples)) for p, seed in requests]
    sizes = [samples] * len(requests)
    plan = Dispatch.for_rollout(sizes, engines, RolloutConfig(dispatch=dispatch, chunk_samples=samples))  # as run_one
    now, free, events = 0.0, [0.0] * engines, []
    while not plan.done:
        for w, c in plan.assign():
            free[w] = max(free[w], now) + sum(tokens[i] for i in plan.chunks[c])
            heapq.heappush(events, (free[w], w, c))
        now, w, c = heapq.heappop(events)
        plan.complete(w, c)
    return sum(tokens) / (engines * now)


# ------------------------------------------------------------------------------------------------ simulated actors
class EngineHost:
    """Many virtual engines in one asyncio actor; each serves one call at a time at `rate` tokens/s."""

    def __init__(self, rate: float):
        self.work, self.rate = Workload(), rate
        self.locks: dict[int, asyncio.Lock] = {}
        self.version = 0
        self.bytes = 0

    def ready(self, i: int) -> dict:
        return {"index": i, "pid": os.getpid(), "node_id": "simulated", "version": self.version}

    def policy_version(self, i: int) -> int:
        return self.version

    def set_version(self, version: int) -> None:
        self.version = version

    async def generate(self, i: int, requests) -> list:
        from rayscale.types import Sample

        async with self.locks.setdefault(i, asyncio.Lock()):
            out, tokens = [], 0
            for r in requests:
                samples = []
                for j in range(r.n):
                    text = self.work.solution(r.prompt_id, r.seed, j)
                    n = self.work.lengths[text]
                    tokens += n
                    samples.append(Sample(r.prompt_id, r.prompt, r.prefix, text, array("i", bytes(4 * n)),
                                          logprobs=array("f", bytes(4 * n)), policy_version=self.version))
                out.append(samples)
            await asyncio.sleep(tokens / self.rate)
        self.bytes += len(pickle.dumps(requests)) + sum(SAMPLE_BYTES + 8 * len(x.token_ids) + len(x.text) +
                                                        len(x.prompt) for samples in out for x in samples)
        return out

    def take_bytes(self) -> int:
        b, self.bytes = self.bytes, 0
        return b


class VirtualEngine:
    """What the manager holds for one engine: `generate.remote` etc. go to its host, naming the engine."""

    def __init__(self, host, index: int):
        self.generate = SimpleNamespace(remote=lambda requests: host.generate.remote(index, requests))
        self.ready = SimpleNamespace(remote=lambda: host.ready.remote(index))
        self.policy_version = SimpleNamespace(remote=lambda: host.policy_version.remote(index))


class VerifierSim:
    def __init__(self):
        self.work, self.bytes = Workload(), 0

    async def verify(self, items, procs: int, cost_s: float) -> list[tuple[bool, str | None]]:
        await asyncio.sleep(math.ceil(len(items) / procs) * cost_s)
        out = [(self.work.label.get(response, False), None) for _, response in items]
        self.bytes += len(pickle.dumps(items)) + len(pickle.dumps(out))
        return out

    def take_bytes(self) -> int:
        b, self.bytes = self.bytes, 0
        return b


class TeacherSim:
    def __init__(self):
        self.work, self.bytes = Workload(), 0
        self.gate: asyncio.Semaphore | None = None

    async def correct(self, requests, median_s: float, cap: int, seed: int) -> list:
        from rayscale.teacher.records import Correction

        rng = random.Random(seed)
        if self.gate is None:  # one cap for the whole teacher, however many calls are in flight (streaming)
            self.gate = asyncio.Semaphore(cap)
        gate = self.gate

        async def one(req, latency):
            async with gate:
                await asyncio.sleep(latency)
            steps = self.work.gold[self.work.question(req.prompt_id)].splitlines()
            return Correction(req.prompt_id, 0, "simulated", [], steps, "\n".join(steps), None, True, None)

        out = await asyncio.gather(*(one(r, median_s * rng.lognormvariate(0, 0.5)) for r in requests))
        self.bytes += len(pickle.dumps(requests)) + len(pickle.dumps(out))
        return out

    def take_bytes(self) -> int:
        b, self.bytes = self.bytes, 0
        return b


@dataclass
class Sim:
    engines: int
    rate: float  # tokens/s of one engine, real time
    speedup: float
    verify_ms: float
    teacher_s: float
    teacher_cap: int
    params_b: float
    sync_gbps: float
    prompts_per_engine: int
    samples: int

    def seconds(self, real_s: float) -> float:
        return real_s / self.speedup


# ------------------------------------------------------------------------------------------------ the controller
def simulated_trainer(sim: Sim, actors: dict, cfg, inputs):
    """The real Trainer, its actors replaced by the simulated ones (subclassing only where it starts them)."""
    import ray

    from rayscale.actors.rollout import RolloutManager
    from rayscale.controller import Trainer

    hosts = actors["hosts"]

    class SimulatedRollout(RolloutManager):
        def __init__(self, rollout_cfg):
            plan = SimpleNamespace(count=rollout_cfg.num_workers, bundle={})
            super().__init__("simulated", rollout_cfg, placement=SimpleNamespace(plan=plan))

        def _spawn(self, i: int):
            return VirtualEngine(hosts[i % len(hosts)], i)

        def shutdown(self) -> None:
            self.workers = []

    class Verifier:
        def verify(self, items):
            verdicts = ray.get(actors["verifier"].verify.remote(items, 2 * sim.engines, sim.seconds(sim.verify_ms / 1e3)))
            return [SimpleNamespace(correct=c, pred=p) for c, p in verdicts]

        def shutdown(self) -> None:
            pass

    class Teacher:
        calls = 0

        def correct(self, requests):
            self.calls += 1
            return ray.get(actors["teacher"].correct.remote(requests, sim.seconds(sim.teacher_s), sim.teacher_cap,
                                                            self.calls))

        def shutdown(self) -> None:
            pass

    class Learner:
        ranks: list = []
        bytes = 0

        def score_tokens(self, contexts, continuations):
            return [[0.0] * len(c) for c in continuations]

        def train_dpo(self, pairs):
            self.bytes += len(pickle.dumps(pairs))
            chars = sum(len(p.prompt) + len(p.shared_prefix) * 2 + len(p.chosen) + len(p.rejected) for p in pairs)
            tokens = chars * actors["work"].tokens_per_char
            time.sleep(sim.seconds(8 * sim.params_b * 1e9 * tokens / (sim.engines * 400e12 * 0.4)))
            return {"loss": 0.69, "tokens": tokens}

        def set_reference_from_policy(self) -> None:
            pass

        def export_hf(self, path) -> None:
            pass

        def shutdown(self) -> None:
            pass

    class SimulatedTrainer(Trainer):
        def run(self) -> int:
            self.marks: list[tuple[float, float]] = [(time.process_time(), time.perf_counter())]
            return self.run_from(None)

        def start_support_actors(self) -> None:
            self.verifier, self.teacher = Verifier(), Teacher()

        def start_policy_actors(self, policy_path, state) -> None:
            self.rollout, self.learner = SimulatedRollout(self.cfg.rollout), Learner()

        def sync_weights(self) -> None:
            time.sleep(sim.seconds(2 * sim.params_b * 1e9 / (sim.sync_gbps * 1e9)))
            ray.get([h.set_version.remote(self.version) for h in hosts])
            self.weight_sync.last_report = {"bytes": int(2 * sim.params_b * 1e9), "transport": "simulated"}

        def save(self, it, cursor_state) -> None:
            pass  # nothing to checkpoint in a simulation

        def finished_early(self, row) -> bool:
            self.marks.append((time.process_time(), time.perf_counter()))
            row["driver_bytes"] = sum(ray.get([a.take_bytes.remote() for a in
                                               [*hosts, actors["verifier"], actors["teacher"]]])) + self.learner.bytes
            self.learner.bytes = 0
            return False

    return SimulatedTrainer(cfg, inputs)


MODES = {  # the rows of the table: how the rollout is dispatched, and whether the later stages stream
    "fixed": ("fixed", False),  # today's fixed shares, stages one after another: the baseline
    "dynamic": ("dynamic", False),
    "streaming": ("dynamic", True),  # dynamic dispatch and algo.stream_stages: the design measured
}


def run_one(sim: Sim, mode: str, iterations: int, actors: dict, base, workdir: Path) -> dict:
    from rayscale.config_loading import load_config

    dispatch, stream = MODES[mode]
    prompts = sim.prompts_per_engine * sim.engines
    run_dir = workdir / f"{mode}_{sim.engines}"
    cfg = load_config(None, [
        f"tracking.run_dir={run_dir}", "tracking.wandb=false", "tracking.plots=false", "tracking.log_pairs=0",
        f"algo.iterations={iterations}", "algo.eval_every=0", "algo.sft.source=none", "algo.async_rollout=true",
        "algo.strategy=correction", f"algo.prompts_per_iteration={prompts}", f"algo.samples_per_prompt={sim.samples}",
        "checkpoint.every=0", f"rollout.num_workers={sim.engines}", f"rollout.dispatch={dispatch}",
        f"rollout.chunk_samples={sim.samples}", "learner.num_ranks=1", f"algo.stream_stages={str(stream).lower()}",
    ])
    inputs = replace(base, run_dir=run_dir)
    run_dir.mkdir(parents=True)
    reset_peak_rss()
    trainer = simulated_trainer(sim, actors, cfg, inputs)
    with quiet():
        status = trainer.run()
    if status != 0:
        raise RuntimeError(f"{mode} with {sim.engines} engines: the run ended with status {status}")
    # iteration 1 had nothing collected ahead (warm-up) and the last one collects nothing beside its training
    rows = trainer.tracker.rows[1:-1]
    cpu = [trainer.marks[k][0] - trainer.marks[k - 1][0] for k in range(2, iterations)]
    stages = [{s: r["time"].get(s, 0.0) for s in STAGES} for r in rows]
    longest = [max(st.values()) for st in stages]
    tokens = sum(r["tokens"] for r in rows)
    rollout_s = sum(r["time"]["rollout"] for r in rows)
    return {
        "rollout_efficiency": tokens / (sim.engines * sim.rate * sim.speedup * rollout_s),
        "iteration_vs_longest_stage_async": sum(r["iteration_s"] for r in rows) / sum(longest),
        "iteration_s": mean(r["iteration_s"] for r in rows),
        "longest_stage_s": mean(longest),
        # streaming: seconds during which each streaming stage had a call running (beside the rollout)
        "stream_busy_s": {k: mean(r.get(f"stream/busy_s/{k}", 0.0) for r in rows) for k in ("verify", "teacher")},
        "stages_s": {s: mean(st[s] for st in stages) for s in STAGES},
        "controller_cpu_s": mean(cpu),
        "controller_peak_mb": peak_rss_mb(),
        "driver_mb": mean(r["driver_bytes"] for r in rows) / 1e6,
        "samples": rows[0]["samples"], "tokens_per_iteration": tokens / len(rows),
        "scheduling_bound": scheduling_bound(actors["work"], sim.engines, sim.prompts_per_engine, sim.samples,
                                             dispatch),
    }


def reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
    except OSError:
        pass


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def quiet():
    """The trainer's console lines go nowhere, not between the table's."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 iterations per run (2 measured), speedup 8")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--engines", default="1,8,64,256", help="comma-separated engine counts")
    ap.add_argument("--iterations", type=int, default=None, help="per run (default 6, --quick 4); the first and last excluded")
    ap.add_argument("--speedup", type=float, default=None, help="simulated time / real time (default 4, quick 8)")
    ap.add_argument("--rate", type=float, default=2000.0, help="tokens/s of one engine (real time)")
    ap.add_argument("--verify-ms", type=float, default=5.0, help="verifier ms per response per process")
    ap.add_argument("--teacher-s", type=float, default=2.0, help="teacher latency median, s (lognormal, sigma 0.5)")
    ap.add_argument("--teacher-cap", type=int, default=512, help="teacher requests at once")
    ap.add_argument("--params-b", type=float, default=7.0, help="model size, billions of parameters")
    ap.add_argument("--sync-gbps", type=float, default=20.0, help="weight sync GB/s")
    ap.add_argument("--prompts-per-engine", type=int, default=16, help="prompts per iteration and engine")
    ap.add_argument("--samples", type=int, default=4, help="samples per prompt (one request; one chunk each)")
    ap.add_argument("--hosts", type=int, default=4, help="Ray actors hosting the virtual engines")
    args = ap.parse_args(argv)
    if not SOLUTIONS.is_file():
        print(f"scale.py: {SOLUTIONS} is missing (the labelled GSM8K solutions of ../shared/data)", file=sys.stderr)
        return 2
    iterations = max(3, args.iterations or (4 if args.quick else 6))
    speedup = args.speedup or (8.0 if args.quick else 4.0)
    engines = [int(e) for e in args.engines.split(",")]

    import ray

    from rayscale.config_loading import load_config
    from rayscale.run_setup import prepare_run

    started = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=512 << 20)
    remote = lambda cls: ray.remote(cls).options(num_cpus=0, max_concurrency=100_000)  # noqa: E731
    actors = {"hosts": [remote(EngineHost).remote(args.rate * speedup) for _ in range(args.hosts)],
              "verifier": remote(VerifierSim).remote(), "teacher": remote(TeacherSim).remote(),
              "work": Workload()}
    results: dict[str, dict[str, dict]] = {mode: {} for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="rayscale-scale-") as tmp:
        base_cfg = load_config(None, [f"tracking.run_dir={Path(tmp) / 'base'}", "tracking.wandb=false"])
        with quiet():
            base = prepare_run(base_cfg)  # the tiny model: its tokenizer renders the prompts
        for n in engines:
            sim = Sim(n, args.rate, speedup, args.verify_ms, args.teacher_s, args.teacher_cap, args.params_b,
                      args.sync_gbps, args.prompts_per_engine, args.samples)
            for mode in MODES:
                results[mode][str(n)] = run_one(sim, mode, iterations, actors, base, Path(tmp))
            # Streaming stages overlap, so a streaming iteration has no stage of its own to compare with: its
            # yardstick is the longest stage as each stage takes on its own, measured by the `dynamic` run (same
            # dispatch, stages one after another).
            streamed = results["streaming"][str(n)]
            streamed["iteration_vs_longest_stage_async"] = (streamed["iteration_s"] /
                                                            results["dynamic"][str(n)]["longest_stage_s"])
            for mode in MODES:
                print(f"  {n:>4} engines, {mode:<9}: {summary(results[mode][str(n)])}", file=sys.stderr)
    ray.shutdown()
    print_table(results, engines, speedup, iterations)
    if args.json:
        key = lambda mode, figure: {str(n): results[mode][str(n)][figure] for n in engines}  # noqa: E731
        out = {"rollout_efficiency": key("streaming", "rollout_efficiency"),
               "iteration_vs_longest_stage_async": key("streaming", "iteration_vs_longest_stage_async"),
               "baseline": {"rollout_efficiency": key("fixed", "rollout_efficiency"),
                            "iteration_vs_longest_stage_async": key("fixed", "iteration_vs_longest_stage_async")},
               "scheduling_bound": {mode: key(mode, "scheduling_bound") for mode in MODES},
               "runs": results,
               "settings": {**vars(args), "json": str(args.json), "iterations": iterations, "speedup": speedup},
               "wall_s": time.perf_counter() - started}
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def summary(r: dict) -> str:
    return f"efficiency {r['rollout_efficiency']:.2f}, iteration/longest {r['iteration_vs_longest_stage_async']:.2f}"


def print_table(results: dict, engines: list[int], speedup: float, iterations: int) -> None:
    print(f"\nsimulated engines, async mode, time scaled down {speedup:g}x; {iterations - 2} measured iterations "
          "per run (the first and last excluded); fixed = fixed shares, stages one after another (baseline); "
          "dynamic = dynamic dispatch; streaming = dynamic dispatch + algo.stream_stages (the JSON's figures)")
    head = (f"{'engines':>7} | {'mode':<9} | {'rollout eff':>11} | {'iter/longest':>12} | {'iter s':>7} | "
            f"{'longest stage':<18} | {'ctl CPU s/it':>12} | {'ctl peak MB':>11} | {'driver MB/it':>12} | "
            f"{'bound eff':>9} | {'busy s ver/teach':>16}")
    print(head)
    print("-" * len(head))
    for n in engines:
        for mode in MODES:
            r = results[mode][str(n)]
            stage = max(r["stages_s"], key=r["stages_s"].get)
            longest = f"{stage} {r['stages_s'][stage]:.2f}s"
            print(f"{n:>7} | {mode:<9} | {r['rollout_efficiency']:>11.3f} | "
                  f"{r['iteration_vs_longest_stage_async']:>12.3f} | {r['iteration_s']:>7.2f} | "
                  f"{longest:<18} | {r['controller_cpu_s']:>12.3f} | "
                  f"{r['controller_peak_mb']:>11.0f} | {r['driver_mb']:>12.1f} | {r['scheduling_bound']:>9.3f} | "
                  f"{busy(r):>16}")


def busy(r: dict) -> str:
    b = r["stream_busy_s"]
    return f"{b['verify']:.2f} / {b['teacher']:.2f}" if any(b.values()) else "-"


if __name__ == "__main__":
    sys.exit(main())
