"""What every run needs before any actor starts: the run directory, the student model and the data splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rayscale.config import RayscaleConfig
from rayscale.data import Problem, load_problems


@dataclass
class RunInputs:
    run_dir: Path
    model_path: str
    train: list[Problem]
    eval: list[Problem]


def resolve_model_path(cfg: RayscaleConfig, run_dir: Path) -> str:
    """`model.path` as given (HF dir or hub id), or the tiny model built once into the run directory."""
    if cfg.model.path:
        return cfg.model.path
    from rayscale.models import make_tiny_model

    out = run_dir / "tiny_model"
    if not (out / "config.json").is_file():
        make_tiny_model(out, cfg.model.tiny)
    return str(out)


def load_splits(cfg: RayscaleConfig) -> tuple[list[Problem], list[Problem]]:
    d = cfg.data
    train = load_problems(d.source, d.path, d.split, d.field_map, synthetic_cfg=d.synthetic)
    eval_source = d.eval_source or d.source
    eval_path = d.eval_path if d.eval_source else (d.eval_path or (d.path if d.source == "jsonl" else None))
    held_out = load_problems(eval_source, eval_path, d.eval_split, d.field_map, d.eval_size, synthetic_cfg=d.synthetic)
    return train, held_out


def prepare_run(cfg: RayscaleConfig, build_model: bool = True) -> RunInputs:
    run_dir = Path(cfg.tracking.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model_path = resolve_model_path(cfg, run_dir) if build_model else (cfg.model.path or str(run_dir / "tiny_model"))
    train, held_out = load_splits(cfg)
    return RunInputs(run_dir=run_dir, model_path=model_path, train=train, eval=held_out)
