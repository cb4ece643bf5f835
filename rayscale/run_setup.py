"""What every run needs before any actor starts: the run directory, the student model and the data splits."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from rayscale import logs
from rayscale.config import RayscaleConfig
from rayscale.data import Problem, load_problems
from rayscale.errors import ConfigError
from rayscale.models import make_tiny_model
from rayscale.run_dir import claim as run_dir_claim
from rayscale.writing import make_run_dir


@dataclass
class RunInputs:
    run_dir: Path
    model_path: str
    model_source: str  # how the student model will load (printed by `rayscale train`)
    train: list[Problem]
    eval: list[Problem]


# Any one of these beside config.json makes a directory's tokenizer loadable by AutoTokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def check_model_source(path: str, key: str) -> str:
    """A model a run will load, checked before anything starts: a local HF directory with config, weights and a
    tokenizer, or a hub id (loaded from the hub or its cache at start-up). Returns how it will be loaded."""
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ConfigError(f"{key}={path}: a file, not a model directory (a Hugging Face directory holds "
                              "config.json, weights and tokenizer files)")
        if not (local / "config.json").is_file():
            raise ConfigError(f"{key}={path}: no config.json, so not a Hugging Face model directory; make one with "
                              "`rayscale model smollm2-135m DIR`, `rayscale make-tiny-model DIR` or save_pretrained")
        if not any(any(local.glob(pattern)) for pattern in WEIGHT_PATTERNS):
            raise ConfigError(f"{key}={path}: no weights (*.safetensors or *.bin) beside config.json")
        for weights in sorted(local.glob("*.safetensors")):
            problem = safetensors_problem(weights)
            if problem:
                raise ConfigError(f"{key}={path}: {weights.name} is damaged ({problem}); copy or convert the model "
                                  "again")
        if not any((local / name).is_file() for name in TOKENIZER_FILES):
            raise ConfigError(f"{key}={path}: no tokenizer ({', '.join(TOKENIZER_FILES)}); save it beside the "
                              "weights: AutoTokenizer.from_pretrained(SOURCE).save_pretrained(DIR)")
        return "local directory"
    if path.startswith(("/", ".", "~")) or not _HUB_ID.fullmatch(path):
        raise ConfigError(f"{key}={path}: no such directory")
    return "hub id, loaded from the hub (or its cache) at start-up"


def safetensors_problem(file: Path) -> str | None:
    """Why a safetensors file cannot load (None: its header reads and the file holds every tensor it lists). Reads
    the header only: 8 bytes of header length, the JSON header, then compares the data's end with the file size."""
    size = file.stat().st_size
    try:
        with open(file, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{size} bytes: shorter than a safetensors header"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return f"its header says {n} bytes of header, the file has {size} (truncated?)"
            header = json.loads(f.read(n))
        ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        return f"unreadable header ({type(e).__name__})"
    need = 8 + n + max(ends, default=0)
    if size < need:
        return f"{size} bytes where its tensors need {need}: truncated"
    return None


def model_sources(cfg: RayscaleConfig) -> dict[str, str]:
    """Every model path the config names, by key."""
    named = {"model.path": cfg.model.path, "model.ref_path": cfg.model.ref_path,
             "algo.weak_to_strong.weak_model": cfg.algo.weak_to_strong.weak_model}
    if cfg.teacher.backend == "local":
        named["teacher.local.model_path"] = cfg.teacher.local.model_path
    return {key: path for key, path in named.items() if path}


def resolve_model_path(cfg: RayscaleConfig, run_dir: Path) -> str:
    """`model.path` as given (HF dir or hub id), or the tiny model built once into the run directory."""
    if cfg.model.path:
        return cfg.model.path
    out = run_dir / "tiny_model"
    if not (out / "config.json").is_file():
        make_tiny_model(out, cfg.model.tiny)
    return str(out)


def load_splits(cfg: RayscaleConfig) -> tuple[list[Problem], list[Problem]]:
    d = cfg.data
    train = load_problems(d.source, d.path, d.split, d.field_map, synthetic_cfg=d.synthetic, key="data.path")
    eval_source = d.eval_source or d.source
    eval_path = d.eval_path if d.eval_source else (d.eval_path or (d.path if d.source == "jsonl" else None))
    held_out = load_problems(eval_source, eval_path, d.eval_split, d.field_map, d.eval_size, synthetic_cfg=d.synthetic,
                             key="data.eval_path" if d.eval_path else "data.path")
    return train, held_out


def prepare_run(cfg: RayscaleConfig, build_model: bool = True) -> RunInputs:
    """Everything checked before anything is written; `build_model=False` (`--dry-run`) writes nothing at all."""
    sources = {key: check_model_source(path, key) for key, path in model_sources(cfg).items()}
    train, held_out = load_splits(cfg)  # a bad data file fails before anything is written or built
    run_dir = Path(cfg.tracking.run_dir)
    run_dir_claim(cfg, dry_run=not build_model)  # one run per run directory
    if build_model:
        make_run_dir(run_dir)
    model_path = resolve_model_path(cfg, run_dir) if build_model else (cfg.model.path or str(run_dir / "tiny_model"))
    return RunInputs(run_dir=run_dir, model_path=model_path,
                     model_source=sources.get("model.path", "the tiny model, built here"), train=train, eval=held_out)


def actor_log_note(cfg: RayscaleConfig, run_dir: Path) -> str:
    if logs.verbose_requested(cfg.tracking.verbose):
        return "on this console (tracking.verbose)"
    return f"{logs.log_dir(run_dir)}/ (tracking.verbose=true or RAYSCALE_VERBOSE=1 shows them here)"


def print_banner(cfg: RayscaleConfig, inputs: RunInputs) -> None:
    """What a run is about to do, printed once before anything starts (also by --dry-run)."""
    print(f"run directory : {inputs.run_dir}")
    print(f"student model : {inputs.model_path} ({inputs.model_source})")
    print(f"data          : {cfg.data.source} train={len(inputs.train)} held-out={len(inputs.eval)}")
    print(f"algorithm     : {cfg.algo.iterations} iterations of {cfg.algo.strategy} pairs, "
          f"{cfg.algo.prompts_per_iteration} prompts x {cfg.algo.samples_per_prompt} samples, loss {cfg.algo.loss}")
    print(f"actor logs    : {actor_log_note(cfg, inputs.run_dir)}")
    if cfg.rollout.backend == "vllm" and not cfg.cluster.rollout.num_gpus:
        # Said once here instead of by vLLM in every engine (its warnings go to the actor logs).
        print("vLLM on CPU   : chunked prefill off (a seeded request's prompt must not be split over engine "
              "steps); weights are cast to the engine's dtype on load")
