"""Controller state on disk: what a resumed run needs to draw the same prompts from the same policy.

A checkpoint directory `<checkpoint.dir>/iter_000012/` holds `controller.json` (iteration, policy version, data
cursor, starting model) and `learner/` (the DeepSpeed checkpoint with optimizer and scheduler state). Sampling seeds
are derived from (algo.seed, iteration, prompt index), so no RNG state needs saving for the draws to repeat.
`controller.json` is written last and atomically: a directory without it is an interrupted save and is ignored.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_FILE = "controller.json"


@dataclass
class ControllerState:
    iteration: int
    policy_version: int
    cursor: dict[str, int]
    start_model: str  # the policy the actors are built from before the learner checkpoint is loaded
    path: str
    learner_dir: str


def checkpoint_path(root: Path, iteration: int) -> Path:
    return Path(root) / f"iter_{iteration:06d}"


def write_state(path: Path, state: ControllerState) -> None:
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    os.replace(tmp, path / STATE_FILE)


def read_state(path: Path) -> ControllerState:
    file = Path(path) / STATE_FILE
    try:
        return ControllerState(**json.loads(file.read_text()))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is not a rayscale checkpoint (no {STATE_FILE})") from None
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{file}: unreadable controller state ({e})") from None


def complete_checkpoints(root: Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("iter_*") if (p / STATE_FILE).is_file())


def find_resume_state(resume: str, root: Path) -> ControllerState | None:
    """`never`: start fresh; `auto`: the newest complete checkpoint under `root`, if any; else a path."""
    if resume == "never":
        return None
    if resume == "auto":
        found = complete_checkpoints(root)
        return read_state(found[-1]) if found else None
    return read_state(Path(resume))


def prune(root: Path, keep_last: int) -> None:
    for old in complete_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
