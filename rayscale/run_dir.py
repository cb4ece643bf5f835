"""One run per run directory: a fresh start (`checkpoint.resume=never`) never mixes with, or prunes, a run that
is already there.

A directory holds a run when it has checkpoints or a `metrics.jsonl`. Starting over in one is refused (exit 2)
unless `checkpoint.overwrite=true`, which first deletes that run's record: its checkpoints, metrics, pairs, eval
samples, plots, wandb files and final model. The inputs a later run may reuse stay: `tiny_model/` (built from
`model.tiny`) and `sft_model/` (stage 1's output, reused when present; delete it for a fresh stage 1).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from rayscale.config import RayscaleConfig
from rayscale.errors import ConfigError

RUN_RECORD = ("metrics.jsonl", "pairs.jsonl", "samples", "final_model", "accuracy.png", "margins.png", "wandb")


def checkpoint_dir(cfg: RayscaleConfig) -> Path:
    return Path(cfg.checkpoint.dir or Path(cfg.tracking.run_dir) / "checkpoints")


def run_held(run_dir: Path, ckpt_dir: Path) -> str | None:
    """What shows that a run already lives here (None: nothing does)."""
    ckpts = sorted(p.name for p in ckpt_dir.glob("iter_*")) if ckpt_dir.is_dir() else []
    metrics = run_dir / "metrics.jsonl"
    held = []
    if ckpts:
        held.append(f"{len(ckpts)} checkpoint(s) in {ckpt_dir} (newest {ckpts[-1]})")
    if metrics.is_file():
        rows = sum(1 for line in metrics.read_text(errors="replace").splitlines() if line.strip())
        held.append(f"{metrics} ({rows} rows)")
    return " and ".join(held) or None


def claim(cfg: RayscaleConfig, dry_run: bool = False, say: Callable[[str], None] = print) -> None:
    """Check (and with checkpoint.overwrite, clear) the run directory before a run writes anything into it."""
    run_dir, ckpt_dir = Path(cfg.tracking.run_dir), checkpoint_dir(cfg)
    if cfg.checkpoint.resume != "never":
        return
    held = run_held(run_dir, ckpt_dir)
    if held is None:
        return
    if not cfg.checkpoint.overwrite:
        raise ConfigError(
            f"tracking.run_dir={run_dir} already holds a run: {held}. checkpoint.resume=never would start a second "
            "run on top of it (mixed metrics, pruned checkpoints). Give a new tracking.run_dir, continue the old "
            "run with checkpoint.resume=auto, or delete it first with checkpoint.overwrite=true")
    if dry_run:
        say(f"checkpoint.overwrite=true: a real run would first delete the run held here: {held}")
        return
    say(f"checkpoint.overwrite=true: deleting the run held here: {held}")
    for ckpt in ckpt_dir.glob("iter_*") if ckpt_dir.is_dir() else []:
        shutil.rmtree(ckpt)
    for name in RUN_RECORD:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
