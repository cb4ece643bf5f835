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

from rayscale.config import SyntheticTaskConfig
from rayscale.data.problem import Problem
from rayscale.data.synthetic import synthetic_splits
from rayscale.text import last_boxed

HUB_IDS = {
    "gsm8k": ("openai/gsm8k", "main"),
    "math": ("DigitalLearningGmbH/MATH-lighteval", None),
    "math500": ("HuggingFaceH4/MATH-500", None),
}
SHARED_FILES = {("gsm8k", "train"): "gsm8k_train.jsonl", ("gsm8k", "test"): "gsm8k_test.jsonl",
                ("math500", "test"): "math500_test.jsonl"}


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
    with open(path, "rb") as f:  # decoded line by line, so a bad byte is reported on its own line
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1});"
                                " save the file as UTF-8") from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}); expected one JSON "
                                "object per line (JSONL)") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__} (one JSON object "
                                "per line, JSONL)")
            yield lineno, row


def _iter_rows(path_or_id: str, split: str, hub_config: str | None,
               label: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location for error messages, row) from a local JSONL/parquet file or a hub dataset. Errors about the
    location itself (named by `label`, e.g. `data.path=X`) are raised by this call, errors in a row while iterating."""
    label = label or path_or_id
    path = Path(path_or_id)
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        return ((f"{path}:{lineno}", row) for lineno, row in iter_jsonl(path))
    if not path.exists() and (path_or_id.startswith(("/", ".", "~")) or path.suffix in (".jsonl", ".json", ".parquet")):
        raise DataError(f"{label}: no such file (expected a local .jsonl or .parquet file, a directory of "
                        "parquet files, or a hub dataset id)")
    if path.is_file() and path.suffix != ".parquet":
        raise DataError(f"{label}: a {path.suffix or 'suffix-less'} file; expected a .jsonl file (one JSON "
                        "object per line) or a .parquet file")
    import datasets  # datasets: heavy (~1.4 s), only for parquet and hub sources

    if path.exists():
        files = [str(p) for p in sorted(path.glob(f"**/{split}*.parquet"))] if path.is_dir() else [str(path)]
        if not files:
            raise DataError(f"{label}: no {split}*.parquet files in this directory (expected a .jsonl or "
                            f".parquet file, or a directory holding {split}*.parquet)")
    try:
        if path.exists():
            ds = datasets.load_dataset("parquet", data_files=files, split="train")
        else:
            ds = datasets.load_dataset(path_or_id, hub_config, split=split)
    except Exception as e:  # unreadable parquet, unknown hub id, no network: all fixed by the user
        what = "cannot read it as parquet" if path.exists() else (
            f"not a local file, and hub dataset {path_or_id!r} (split {split!r}) could not be loaded")
        raise DataError(f"{label}: {what} ({type(e).__name__}: {str(e)[:300]}); give a local .jsonl or "
                        ".parquet file, or a hub id that exists (offline: download it first)") from None
    return ((f"{path_or_id}[{split}] row {i}", row) for i, row in enumerate(ds))


def _field(row: dict[str, Any], name: str, where: str, expected: str, numbers: bool = False) -> Any:
    """A non-empty string field (or, with `numbers`, a number, returned as a string)."""
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: missing or empty field {name!r} (expected fields: {expected})")
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        kind = "a string or a number" if numbers else "a string"
        raise DataError(f"{where}: field {name!r} must be {kind}, got {type(value).__name__} {value!r:.40}")
    return value


# ------------------------------------------------------------------------------------------------ GSM8K


def gsm8k_problem(row: dict[str, Any], where: str, index: int, split: str) -> Problem:
    question = _field(row, "question", where, "question, answer")
    answer_text = _field(row, "answer", where, "question, answer")
    head, sep, tail = answer_text.rpartition("####")
    if not sep or not tail.strip():
        raise DataError(f"{where}: field 'answer' has no final '#### <number>' line (a GSM8K answer ends with its "
                        "result on a line of its own, e.g. \"...\\n#### 18\")")
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
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        answer = str(answer)
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
        question=_field(row, names["question"], where, expected),
        gold_answer=_field(row, names["gold_answer"], where, expected, numbers=True).strip(),
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


# What one row of each source holds, for error messages.
SOURCE_NAMES = {"gsm8k": "GSM8K", "math": "MATH", "math500": "MATH500", "jsonl": "generic JSONL"}
ROW_FORMATS = {
    "gsm8k": '{"question": "...", "answer": "<steps>\\n#### <number>"}',
    "math": '{"problem": "...", "answer": "..."} (or no "answer" and a "solution" with \\boxed{...})',
    "jsonl": '{"question": "...", "gold_answer": "..."} (other field names: data.field_map)',
}


def load_problems(
    source: str,
    path: str | None = None,
    split: str = "test",
    field_map: dict[str, str] | None = None,
    limit: int | None = None,
    synthetic_cfg=None,
    key: str = "data.path",
) -> list[Problem]:
    """Problems of one split of one source, in file order. `key` is the setting `path` came from (for errors)."""
    if source == "synthetic":
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
    label = f"{key}={path}" if path else f"{location} (the default for data.source={source})"
    row_format = f"a {SOURCE_NAMES[source]} row is {ROW_FORMATS['math' if source == 'math500' else source]}"
    rows = _iter_rows(location, split, hub_config, label)
    try:
        for index, (where, row) in enumerate(rows):
            if source == "gsm8k":
                problems.append(gsm8k_problem(row, where, index, split))
            elif source in ("math", "math500"):
                problems.append(math_problem(row, where, index, split, source))
            else:
                problems.append(jsonl_problem(row, where, index, field_map or {}))
            if limit and len(problems) >= limit:
                break
    except DataError as e:  # a bad row: say what a row of this source holds and what to do
        raise DataError(f"{e}\n  {row_format}; fix or remove that line") from None
    if not problems:
        raise DataError(f"{label}: no rows (split {split!r}); expected one JSON object per line, {row_format}")
    return problems


def to_hf_dataset(problems: list[Problem]):
    """A `datasets.Dataset` view of problems (for map/shuffle/select pipelines and saving to disk)."""
    import datasets  # datasets: heavy (~1.4 s), only for this view

    return datasets.Dataset.from_list([p.to_dict() | {"meta": json.dumps(p.meta)} for p in problems])
