"""Loaders that turn GSM8K, MATH/MATH500, generic JSONL and the synthetic task into `Problem` records.

A source is a local file (JSONL or parquet) or a hub id read through `datasets`; the offline defaults are the real
files in `../shared/data`. Local JSONL is read line by line so a malformed row is reported with file and line number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rayscale.data.problem import Problem
from rayscale.text import last_boxed

HUB_IDS = {
    "gsm8k": ("openai/gsm8k", "main"),
    "math": ("DigitalLearningGmbH/MATH-lighteval", None),
    "math500": ("HuggingFaceH4/MATH-500", None),
}
SHARED_FILES = {("gsm8k", "test"): "gsm8k_test.jsonl", ("math500", "test"): "math500_test.jsonl"}


class DataError(ValueError):
    """A data file or row a user must fix; the message names the file, the line and the field."""


def shared_data_dir() -> Path:
    """`$RAYSCALE_SHARED_DATA`, else `../shared/data` beside the checkout (or the working directory)."""
    env = os.environ.get("RAYSCALE_SHARED_DATA")
    if env:
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data"


# ------------------------------------------------------------------------------------------------ raw rows
def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for each non-blank line; a bad line raises DataError naming file and line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def _iter_rows(path_or_id: str, split: str, hub_config: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location for error messages, row) from a local JSONL/parquet file or a hub dataset."""
    path = Path(path_or_id)
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        for lineno, row in iter_jsonl(path):
            yield f"{path}:{lineno}", row
        return
    import datasets  # heavy; only for parquet and hub sources

    if not path.exists() and (path_or_id.startswith(("/", ".", "~")) or path.suffix in (".jsonl", ".json", ".parquet")):
        raise DataError(f"{path_or_id}: no such file (data.path / data.eval_path: a local .jsonl or .parquet file, "
                        "a directory of parquet files, or a hub dataset id)")
    if path.exists():
        files = [str(p) for p in sorted(path.glob(f"**/{split}*.parquet"))] if path.is_dir() else [str(path)]
        if not files:
            raise DataError(f"{path}: no {split}*.parquet files found")
        ds = datasets.load_dataset("parquet", data_files=files, split="train")
    else:
        ds = datasets.load_dataset(path_or_id, hub_config, split=split)
    for i, row in enumerate(ds):
        yield f"{path_or_id}[{split}] row {i}", row


def _field(row: dict[str, Any], name: str, where: str, expected: str) -> Any:
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: missing or empty field {name!r} (expected fields: {expected})")
    return value


# ------------------------------------------------------------------------------------------------ GSM8K


def gsm8k_problem(row: dict[str, Any], where: str, index: int, split: str) -> Problem:
    question = _field(row, "question", where, "question, answer")
    answer_text = _field(row, "answer", where, "question, answer")
    head, sep, tail = answer_text.rpartition("####")
    if not sep or not tail.strip():
        raise DataError(f"{where}: field 'answer' has no final '#### <number>' line")
    gold = tail.strip().replace(",", "")
    # Steps keep their <<a*b=c>> calculator annotations: they are exact arithmetic claims the step checker uses.
    steps = tuple(line.strip() for line in head.splitlines() if line.strip())
    return Problem(
        id=f"gsm8k/{split}/{index}",
        question=question,
        gold_answer=gold,
        gold_solution=answer_text,
        gold_steps=steps,
        source="gsm8k",
    )


# ------------------------------------------------------------------------------------------------ MATH
def math_problem(row: dict[str, Any], where: str, index: int, split: str, source: str) -> Problem:
    question = _field(row, "problem", where, "problem, solution, answer")
    solution = row.get("solution")
    answer = row.get("answer")
    if not (isinstance(answer, str) and answer.strip()):
        answer = last_boxed(solution) if isinstance(solution, str) else None
        if not answer:
            raise DataError(f"{where}: no 'answer' field and no \\boxed{{}} in 'solution'")
    return Problem(
        id=str(row.get("unique_id") or f"{source}/{split}/{index}"),
        question=question,
        gold_answer=answer.strip(),
        gold_solution=solution,
        gold_steps=None,
        source=source,
        meta={k: row[k] for k in ("subject", "level", "type") if k in row},
    )


# ------------------------------------------------------------------------------------------------ generic JSONL
def jsonl_problem(row: dict[str, Any], where: str, index: int, field_map: dict[str, str]) -> Problem:
    """Generic JSONL: `field_map` maps our names (question, gold_answer, gold_solution, id) to the file's."""
    names = {"question": "question", "gold_answer": "gold_answer", "gold_solution": "gold_solution", "id": "id"}
    names.update(field_map)
    expected = f"{names['question']}, {names['gold_answer']}"
    solution = row.get(names["gold_solution"])
    return Problem(
        id=str(row.get(names["id"], f"jsonl/{index}")),
        question=str(_field(row, names["question"], where, expected)),
        gold_answer=str(_field(row, names["gold_answer"], where, expected)).strip(),
        gold_solution=solution,
        gold_steps=tuple(s.strip() for s in solution.splitlines() if s.strip()) if isinstance(solution, str) else None,
        source="jsonl",
    )


# ------------------------------------------------------------------------------------------------ dispatcher
def default_location(source: str, split: str) -> str:
    shared = SHARED_FILES.get((source, split))
    if shared and (shared_data_dir() / shared).is_file():
        return str(shared_data_dir() / shared)
    return HUB_IDS[source][0]


def load_problems(
    source: str,
    path: str | None = None,
    split: str = "test",
    field_map: dict[str, str] | None = None,
    limit: int | None = None,
    synthetic_cfg=None,
) -> list[Problem]:
    """Problems of one split of one source, in file order."""
    if source == "synthetic":
        from rayscale.config import SyntheticTaskConfig
        from rayscale.data.synthetic import synthetic_splits

        if split not in ("train", "test", "dev"):
            raise DataError(f"synthetic task has splits 'train', 'test' and 'dev', not {split!r}")
        problems = synthetic_splits(synthetic_cfg or SyntheticTaskConfig(), dev=split == "dev")[split]
        return problems[:limit] if limit else problems
    if source == "jsonl" and not path:
        raise DataError("data.source=jsonl needs data.path (a local .jsonl file)")
    if source not in ("gsm8k", "math", "math500", "jsonl"):
        raise DataError(f"unknown data source {source!r}")
    location = path or default_location(source, split)
    hub_config = HUB_IDS[source][1] if source in HUB_IDS else None
    problems: list[Problem] = []
    for index, (where, row) in enumerate(_iter_rows(location, split, hub_config)):
        if source == "gsm8k":
            problems.append(gsm8k_problem(row, where, index, split))
        elif source in ("math", "math500"):
            problems.append(math_problem(row, where, index, split, source))
        else:
            problems.append(jsonl_problem(row, where, index, field_map or {}))
        if limit and len(problems) >= limit:
            break
    return problems


def to_hf_dataset(problems: list[Problem]):
    """A `datasets.Dataset` view of problems (for map/shuffle/select pipelines and saving to disk)."""
    import datasets

    return datasets.Dataset.from_list([p.to_dict() | {"meta": json.dumps(p.meta)} for p in problems])
