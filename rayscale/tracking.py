"""Run tracking: a console line per iteration, metrics.jsonl in the run directory, wandb, and PNG plots at the end;
what the learner learns from, readable: pairs.jsonl (a sample of each iteration's pairs) and samples/eval_*.jsonl
(every held-out response of each evaluation), both also as wandb Tables.

wandb runs offline when no WANDB_API_KEY is set (the files stay in the run directory for `wandb sync`), online when
it is, and not at all with `tracking.wandb=false`. Nothing secret is logged: the config goes through `redacted`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rayscale import metric_names as M
from rayscale.config import RayscaleConfig
from rayscale.config_loading import redacted

CONSOLE_KEYS = [  # (metric, label, format) shown on the per-iteration line when present
    (M.ACCURACY, "acc", "{:.3f}"),
    (M.EVAL_GREEDY, "eval_greedy", "{:.3f}"),
    (M.EVAL_SAMPLED, "eval_sampled", "{:.3f}"),
    (M.PAIRS, "pairs", "{:d}"),
    (M.LEARNER_MARGINS, "margin", "{:+.3f}"),
    (M.LEARNER_LOSS, "loss", "{:.4f}"),
    (M.TOKENS_PER_S, "tok/s", "{:.0f}"),
    (M.LOGPROB_GAP, "lp_gap", "{:.3g}"),  # engine vs learner on sampled tokens (rayscale.sync.logprob_gap)
]


class Tracker:
    def __init__(self, cfg: RayscaleConfig, run_dir: Path, resume: bool = False):
        self.cfg, self.run_dir = cfg, run_dir
        self.metrics_path = run_dir / "metrics.jsonl"
        self.pairs_path = run_dir / "pairs.jsonl"
        self.rows: list[dict[str, Any]] = []
        if resume and self.metrics_path.is_file():
            self.rows = [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
        else:
            for path in (self.metrics_path, self.pairs_path):
                path.unlink(missing_ok=True)
        self._wandb = self._start_wandb(resume) if cfg.tracking.wandb else None

    def _start_wandb(self, resume: bool):
        try:
            import wandb  # wandb: heavy (~1.5 s), only with tracking.wandb=true
        except ImportError:  # a declared dependency, but tracking must never stop a run
            return None
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        return wandb.init(
            project=self.cfg.tracking.wandb_project,
            name=self.cfg.tracking.wandb_run_name,
            dir=str(self.run_dir),
            mode=os.environ.get("WANDB_MODE", mode),
            config=redacted(self.cfg.model_dump(mode="json")),
            resume="allow" if resume else None,
            reinit="finish_previous",
        )

    def truncate_after(self, iteration: int) -> None:
        """Drop rows logged after the checkpoint being resumed from, so each iteration appears once."""
        self.rows = [r for r in self.rows if r.get(M.ITERATION, -1) <= iteration]
        self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        if self.pairs_path.is_file():
            kept = [line for line in self.pairs_path.read_text().splitlines()
                    if line.strip() and json.loads(line)[M.ITERATION] <= iteration]
            self.pairs_path.write_text("".join(line + "\n" for line in kept))

    def log_pairs(self, iteration: int, pairs: list) -> None:
        """A sample of what the learner is taught this iteration (evenly spaced over the batch, so every strategy
        of a mix shows): <run_dir>/pairs.jsonl, and a wandb Table."""
        k = self.cfg.tracking.log_pairs
        if not k or not pairs:
            return
        step = max(1, len(pairs) // k)
        rows = [{"iteration": iteration, "prompt_id": p.prompt_id, "strategy": p.strategy, "prompt": p.prompt,
                 "shared_prefix": p.shared_prefix, "chosen": p.chosen, "rejected": p.rejected,
                 "chosen_ended": p.chosen_ended, "rejected_ended": p.rejected_ended, "note": p.note,
                 "policy_version": p.policy_version} for p in pairs[::step][:k]]
        with self.pairs_path.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        self._table("pairs", rows, iteration)

    def log_samples(self, iteration: int, rows: list[dict[str, Any]]) -> Path:
        """Every held-out response of one evaluation: <run_dir>/samples/eval_<iteration>.jsonl, and a wandb Table."""
        out = self.run_dir / "samples" / f"eval_{iteration:04d}.jsonl"
        out.parent.mkdir(exist_ok=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        self._table("eval_samples", rows, iteration)
        return out

    def _table(self, key: str, rows: list[dict[str, Any]], step: int) -> None:
        if self._wandb is None or not rows:
            return
        import wandb  # wandb: heavy, and loaded already here (a wandb run is on)

        columns = list(rows[0])
        table = wandb.Table(columns=columns, data=[[str(r.get(c)) for c in columns] for r in rows])
        self._wandb.log({key: table}, step=step)

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=row[M.ITERATION])

    @staticmethod
    def console_line(row: dict[str, Any]) -> str:
        parts = [f"iter {row[M.ITERATION]:>3}"]
        for key, label, fmt in CONSOLE_KEYS:
            if row.get(key) is not None:
                parts.append(f"{label} {fmt.format(row[key])}")
        failed = {k.removeprefix(M.TEACHER_FAILED_PREFIX): v for k, v in row.items()
                  if k.startswith(M.TEACHER_FAILED_PREFIX) and v}
        if failed:  # never silent: a teacher that fails shows on every line it fails on
            parts.append("teacher failed " + " ".join(f"{k} {v}" for k, v in sorted(failed.items())))
        times = row.get(M.TIME, {})
        if times:
            parts.append("| " + " ".join(f"{k} {v:.1f}s" for k, v in times.items()))
        return "  ".join(parts)

    def finish(self) -> list[Path]:
        paths = plot_metrics(self.rows, self.run_dir) if self.cfg.tracking.plots and self.rows else []
        if self._wandb is not None:
            self._wandb.finish()
        return paths


def plot_metrics(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """accuracy.png (rollout and held-out accuracy) and margins.png (reward margins) per iteration."""
    import matplotlib  # matplotlib: heavy (~1.3 s), only for the plots at the end of a run

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): no display backend is ever tried

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(r[M.ITERATION], r[key]) for r in rows if r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    written = []
    for name, keys, ylabel in (
        ("accuracy.png", [M.ACCURACY, M.EVAL_GREEDY, M.EVAL_SAMPLED], "accuracy"),
        ("margins.png", [M.LEARNER_MARGINS, M.LEARNER_CHOSEN, M.LEARNER_REJECTED],
         "reward (beta * log ratio)"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            xs, ys = series(key)
            if xs:
                ax.plot(xs, ys, marker="o", markersize=3, label=key)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def plot_accuracy_bars(path: Path, names: list[str], bars: dict[str, tuple[list[float], Any]], ylabel: str,
                       title: str | None = None) -> Path:
    """Grouped bars, one group per model: `bars` = {label: (heights, yerr)}; yerr as matplotlib takes it (one
    value per bar, or [below, above] lists for an interval). The benchmarks' accuracy plots."""
    import matplotlib  # matplotlib: heavy, as in plot_metrics

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"), as in plot_metrics

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(bars)
    for k, (label, (heights, yerr)) in enumerate(bars.items()):
        offset = (k - (len(bars) - 1) / 2) * width
        ax.bar([i + offset for i in range(len(names))], heights, width=width, yerr=yerr, capsize=3, label=label)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
