"""`rayscale bench`: what each stage of training sustains on this cluster with this model and config.

It runs the real loop, `Trainer` itself, so the figures are what training does: `--iterations N` in sync mode,
then N in async mode (`algo.async_rollout=true`), with eval, checkpoints, wandb and plots off, in one run
directory (a temporary one unless `--run-dir`; stage 1, when the config has one, runs once and the async run
reuses its model). Every figure is derived from the runs' metrics rows (`metrics.jsonl`), the first iteration of
each mode excluded as warm-up (the broadcast group is built and caches fill in it):

    rollout tokens/s          sum(tokens) / sum(time.rollout); per engine: / rollout.num_workers
    verifier responses/s      sum(samples) / sum(time.verify)
    teacher requests/s        sum(correction/requests) / sum(time.correction)   (n/a: the strategy asks none)
    learner tokens/s          sum(learner/tokens x algo.updates_per_iteration) / sum(time.train)
    weight sync s, GB/s       mean(time.sync); sum(sync/bytes) / sum(time.sync)  (iterations that synced)
    iteration s sync, async   mean stage seconds per iteration; async: the loop's own stages (train, wait_rollout,
                              sync, ...), the next iteration's collect running beside them; speedup = sync / async

Stage figures come from the sync run, where no stage overlaps another; the async run gives its iteration time.
Under the table: the sync iteration's mean seconds per stage and its share, `overhead` (the iteration's wall time
minus its named stages, rayscale.timing) among them.
Pure functions here (`figures`, `format_table`) need neither Ray nor torch; `run_bench` starts the trainer.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rayscale import metric_names as M
from rayscale.algos.pairs import strategy_mix
from rayscale.config import RayscaleConfig
from rayscale.config_loading import validate_config
from rayscale.errors import ConfigError
from rayscale.failures import STOPPED
from rayscale.plan import PlacementError, plan_placement, require_fit
from rayscale.timing import critical_path_s

WARMUP = 1  # iterations of each mode excluded from every figure
TEACHER_STRATEGY = "correction"  # the strategy that asks the teacher; its stage is named after it
KEYS = ("rollout_tokens_per_s", "rollout_tokens_per_s_per_engine", "verifier_responses_per_s",
        "teacher_requests_per_s", "learner_tokens_per_s", "sync_s", "sync_gb_per_s", "iteration_s_sync",
        "iteration_s_async", "async_speedup")


# ------------------------------------------------------------------------------------------------ figures
def measured(rows: list[dict[str, Any]], warmup: int = WARMUP) -> list[dict[str, Any]]:
    """The iteration rows after the warm-up (an iteration-0 eval row, if any, is not an iteration)."""
    its = sorted((r for r in rows if r.get(M.ITERATION, 0) >= 1), key=lambda r: r[M.ITERATION])
    return its[warmup:]


def _rate(rows, work, seconds) -> float | None:
    done = sum(work(r) for r in rows)
    spent = sum(seconds(r) for r in rows)
    return done / spent if spent > 0 and done > 0 else None


def _t(row: dict[str, Any], stage: str) -> float:
    return float(row.get(M.TIME, {}).get(stage, 0.0))


def collect_stages(row: dict[str, Any]) -> set[str]:
    """The stages of `row` that collect() timed: rollout, verify and one per pair strategy (`pairs/<name>`)."""
    return {*M.COLLECT_STAGES, *(k.removeprefix(M.PAIRS_PREFIX) for k in row if k.startswith(M.PAIRS_PREFIX))}


def iteration_seconds(row: dict[str, Any], async_rollout: bool) -> float:
    """Wall seconds of one iteration: every stage in sync mode; in async mode only the loop's own stages, since the
    collect stages in the row ran in the background beside the previous iteration's training."""
    return critical_path_s(row.get(M.TIME, {}), collect_stages(row), collected_ahead=async_rollout)


def stage_breakdown(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean seconds per iteration of every stage in `time` (overhead included), over `rows` (a sync run's: its
    stages sum to the iteration's wall time)."""
    stages: dict[str, float] = {}
    for r in rows:
        for k, v in r.get(M.TIME, {}).items():
            stages[k] = stages.get(k, 0.0) + float(v) / len(rows)
    return stages


def figures(sync_rows: list[dict[str, Any]], async_rows: list[dict[str, Any]], *, num_workers: int,
            updates_per_iteration: int, strategy: str | dict[str, float], warmup: int = WARMUP) -> dict[str, Any]:
    """Every figure of the table (KEYS, None where there is nothing to measure) and how many iterations each
    came from, from the metrics rows of a sync run and an async run of the same config."""
    s, a = measured(sync_rows, warmup), measured(async_rows, warmup)
    out: dict[str, Any] = {}
    out["rollout_tokens_per_s"] = _rate(s, lambda r: r.get(M.TOKENS, 0), lambda r: _t(r, M.STAGE_ROLLOUT))
    per = out["rollout_tokens_per_s"]
    out["rollout_tokens_per_s_per_engine"] = per / num_workers if per is not None else None
    out["verifier_responses_per_s"] = _rate(s, lambda r: r.get(M.SAMPLES, 0), lambda r: _t(r, M.STAGE_VERIFY))
    asks = TEACHER_STRATEGY in strategy_mix(strategy)
    out["teacher_requests_per_s"] = _rate(s, lambda r: r.get(M.CORRECTION_REQUESTS, 0),
                                          lambda r: _t(r, TEACHER_STRATEGY)) if asks else None
    learned = [r for r in s if r.get(M.LEARNER_TOKENS)]
    out["learner_tokens_per_s"] = _rate(learned, lambda r: r[M.LEARNER_TOKENS] * updates_per_iteration,
                                        lambda r: _t(r, M.STAGE_TRAIN))
    synced = [r for r in s if r.get(M.SYNC_BYTES)]
    out["sync_s"] = sum(_t(r, M.STAGE_SYNC) for r in synced) / len(synced) if synced else None
    bps = _rate(synced, lambda r: r[M.SYNC_BYTES], lambda r: _t(r, M.STAGE_SYNC))
    out["sync_gb_per_s"] = bps / 1e9 if bps is not None else None
    out["sync_bytes"] = synced[-1][M.SYNC_BYTES] if synced else None
    # cluster.colocate: the engines sleep, the learner reloads
    handed = [r for r in s if M.STAGE_HAND_OVER in r.get(M.TIME, {})]
    out["hand_over_s"] = sum(_t(r, M.STAGE_HAND_OVER) for r in handed) / len(handed) if handed else None
    out["stages_sync"] = stage_breakdown(s)
    out["iteration_s_sync"] = sum(iteration_seconds(r, False) for r in s) / len(s) if s else None
    out["iteration_s_async"] = sum(iteration_seconds(r, True) for r in a) / len(a) if a else None
    sy, asy = out["iteration_s_sync"], out["iteration_s_async"]
    out["async_speedup"] = sy / asy if sy and asy else None
    out["measured_iterations"] = {"sync": len(s), "async": len(a), "learned": len(learned), "synced": len(synced),
                                  "warmup_excluded": warmup}
    out["rollout_workers"] = num_workers
    out["teacher"] = "asked" if asks else f"n/a: strategy {strategy} asks no teacher"
    if asks and out["teacher_requests_per_s"] is None:
        out["teacher"] = "n/a: no wrong sample was sent to the teacher"
    return out


def _fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:#.3g}"


def format_table(f: dict[str, Any]) -> str:
    """stage | figure | unit | from: the measured iterations behind each figure."""
    n = f["measured_iterations"]
    sync_from, async_from = f"{n['sync']} sync iterations", f"{n['async']} async iterations"
    mb = f"{f['sync_bytes'] / 1e6:,.1f} MB per sync, " if f.get("sync_bytes") else ""
    rows = [
        ("rollout", f["rollout_tokens_per_s"], "tokens/s", f"{sync_from}, all engines"),
        ("rollout per engine", f["rollout_tokens_per_s_per_engine"], "tokens/s",
         f"{sync_from}, / {f['rollout_workers']} engine(s)"),
        ("verifier", f["verifier_responses_per_s"], "responses/s", sync_from),
        ("teacher", f["teacher_requests_per_s"], "requests/s",
         sync_from if f["teacher_requests_per_s"] is not None else f["teacher"]),
        ("learner", f["learner_tokens_per_s"], "tokens/s", f"{n['learned']} sync iterations that trained"),
        ("weight sync", f["sync_s"], "s", f"{n['synced']} syncs"),
        ("weight sync", f["sync_gb_per_s"], "GB/s", f"{mb}{n['synced']} syncs"),
        *([("hand-over to learner", f["hand_over_s"], "s", f"{sync_from}, cluster.colocate (the way back is "
            "in weight sync)")] if f.get("hand_over_s") is not None else []),
        ("iteration, sync", f["iteration_s_sync"], "s", sync_from),
        ("iteration, async", f["iteration_s_async"], "s", async_from),
        ("async speedup", f["async_speedup"], "x", "iteration sync / async"),
    ]
    cells = [("stage", "figure", "unit", "from")] + [(a, _fmt(b), c, d) for a, b, c, d in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(4)]
    lines = []
    for i, r in enumerate(cells):
        lines.append("  ".join([r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].ljust(widths[2]), r[3]]).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if stages := f.get("stages_sync"):
        total = sum(stages.values()) or 1.0
        lines.append("sync iteration, mean s (share): " + ", ".join(
            f"{k} {v:.2f} ({100 * v / total:.1f}%)" for k, v in sorted(stages.items(), key=lambda kv: -kv[1])))
    lines.append(f"first {n['warmup_excluded']} iteration of each mode excluded as warm-up; stage figures from the "
                 "sync run (no stage overlaps another)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ the runs
def mode_config(cfg: RayscaleConfig, run_dir: Path, iterations: int, async_rollout: bool) -> RayscaleConfig:
    """The user's config as the bench runs it: N iterations, eval, checkpoints, wandb and plots off, in run_dir."""
    d = cfg.model_dump()
    d["algo"].update(iterations=iterations, async_rollout=async_rollout, eval_every=0)
    d["checkpoint"].update(every=0, resume="never", overwrite=True, keep_last=1, dir=str(run_dir / "checkpoints"))
    d["tracking"].update(run_dir=str(run_dir), wandb=False, plots=False)
    mode = "async" if async_rollout else "sync"
    return validate_config(d, source=f"rayscale bench, {mode} mode")  # the one entry point: schema, then every rule


def check_run_dir(run_dir: Path) -> None:
    """Never overwrite a training run: a directory with metrics.jsonl but no bench.log is one."""
    if (run_dir / "metrics.jsonl").is_file() and not (run_dir / "bench.log").is_file():
        raise ConfigError(f"--run-dir {run_dir} holds a training run (metrics.jsonl); the bench would overwrite it: "
                          "give a new or empty directory")


class _Progress:
    """A tqdm bar over the iterations of both runs, fed by polling metrics.jsonl (the trainer's own output goes
    to bench.log meanwhile); its postfix shows what the trainer printed last (stage 1, actors starting)."""

    def __init__(self, total: int, stream, enabled: bool):
        self.bar = tqdm(total=total, unit="it", file=stream, disable=not enabled, dynamic_ncols=True,
                        bar_format="{desc:<5} {bar:20} {n_fmt}/{total_fmt} it [{elapsed}]{postfix}")
        self.base, self.metrics, self.log = 0, None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        if enabled:
            self._thread.start()

    def mode(self, name: str, metrics: Path, log: Path, base: int) -> None:
        self.metrics, self.log, self.base = metrics, log, base
        self.bar.set_description_str(name)

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            self.update()

    def update(self) -> None:
        metrics, log = self.metrics, self.log
        if metrics is None:
            return
        try:
            done = sum(1 for line in metrics.read_text().splitlines() if line.strip()) if metrics.is_file() else 0
            last = next((x for x in reversed(log.read_text().splitlines()) if x.strip()), "") if log.is_file() else ""
        except OSError:
            return
        self.bar.n = self.base + done
        self.bar.set_postfix_str(last.strip()[:60], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            self.update()
        self.bar.close()


def _require_fit(cfg: RayscaleConfig, wait_s: float) -> None:
    """PlacementError unless the run of `cfg` fits the cluster now or within `wait_s`: the previous run's placement
    groups and actors are released asynchronously, and the next run's own check (place_roles) must not fail on
    them. Nothing to check under autoscaling (the autoscaler adds nodes)."""
    from rayscale.actors.placement import cluster_nodes  # imports Ray: only a running bench needs it

    plan, deadline = plan_placement(cfg), time.monotonic() + wait_s
    while not cfg.cluster.autoscaling:
        try:
            require_fit(plan, cluster_nodes())
            return
        except PlacementError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _tail(path: Path, n: int = 20) -> str:
    return "\n".join(path.read_text().splitlines()[-n:]) if path.is_file() else ""


def run_bench(cfg: RayscaleConfig, iterations: int = 3, run_dir: str | Path | None = None,
              progress: bool | None = None) -> dict[str, Any]:
    """Run the sync and the async loop of `cfg` for `iterations` each and return `figures` (plus run_dir and the
    settings), rows in <run_dir>/metrics_sync.jsonl and metrics_async.jsonl, the trainer's output in bench.log.
    A temporary run directory is removed afterwards unless the bench failed."""
    if iterations <= WARMUP:
        raise ConfigError(f"--iterations {iterations}: needs at least {WARMUP + 1} (the first is warm-up)")
    temporary = run_dir is None
    if not temporary:
        check_run_dir(Path(run_dir))
    import ray  # torch, Ray, DeepSpeed: only `bench` loads them (as `train` does)

    from rayscale import cluster  # imports Ray
    from rayscale.controller import Trainer  # imports torch, Ray, DeepSpeed
    from rayscale.run_setup import prepare_run  # imports torch (the tiny model)

    base = Path(tempfile.mkdtemp(prefix="rayscale-bench-")) if temporary else Path(run_dir)
    base.mkdir(parents=True, exist_ok=True)
    log = base / "bench.log"
    log.write_text("")
    modes = [("sync", mode_config(cfg, base, iterations, False))]
    if not cfg.cluster.colocate:  # colocated engines and learner take turns: there is no async mode to measure
        modes.append(("async", mode_config(cfg, base, iterations, True)))
    stream = sys.stderr
    started_ray = not ray.is_initialized()
    try:
        with log.open("a") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            inputs = prepare_run(modes[0][1])  # a bad model path or data file fails here, before anything starts
            # The actors' own output stays in Ray's log files; the trainer's console lines go to bench.log.
            cluster.start_or_join(modes[0][1], log_to_driver=False)
            _require_fit(modes[0][1], wait_s=0)  # a config bigger than the cluster fails before the first mode
    except BaseException:
        if temporary:
            shutil.rmtree(base, ignore_errors=True)
        raise
    bar = _Progress(len(modes) * iterations, stream, stream.isatty() if progress is None else progress)
    rows: dict[str, list[dict[str, Any]]] = {}
    wall: dict[str, float] = {}
    failed = True
    try:
        for i, (name, mcfg) in enumerate(modes):
            (base / "metrics.jsonl").unlink(missing_ok=True)  # the bar counts this mode's rows only
            bar.mode(name, base / "metrics.jsonl", log, base=i * iterations)
            start = time.perf_counter()
            with log.open("a") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                print(f"===== rayscale bench: {name} mode, {iterations} iterations =====", flush=True)
                if i:
                    inputs = prepare_run(mcfg)
                    _require_fit(mcfg, wait_s=mcfg.cluster.placement_timeout_s)
                code = Trainer(mcfg, inputs).run()
            wall[name] = time.perf_counter() - start
            if code in STOPPED.values():  # Ctrl-C / SIGTERM: the trainer checkpointed and stopped cleanly
                raise KeyboardInterrupt
            if code != 0:
                raise RuntimeError(f"the {name} run stopped early (exit status {code}); see {log}")
            rows[name] = _read_rows(base / "metrics.jsonl")
            if len(measured(rows[name], warmup=0)) < iterations:  # Ctrl-C / SIGTERM: the trainer stopped cleanly
                raise KeyboardInterrupt
            shutil.copyfile(base / "metrics.jsonl", base / f"metrics_{name}.jsonl")
        failed = False
    finally:
        bar.close()
        if failed:
            print(f"rayscale bench: failed; the trainer's output ({log}), last lines:\n{_tail(log)}", file=stream)
        if started_ray:
            ray.shutdown()
    result = figures(rows["sync"], rows.get("async", []), num_workers=cfg.rollout.num_workers,
                     updates_per_iteration=cfg.algo.updates_per_iteration, strategy=cfg.algo.strategy)
    result.update(iterations=iterations, wall_s=wall, run_dir=None if temporary else str(base),
                  strategy=cfg.algo.strategy, rollout_backend=cfg.rollout.backend, learner_ranks=cfg.learner.num_ranks)
    (base / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    if temporary:
        shutil.rmtree(base, ignore_errors=True)
    return result
