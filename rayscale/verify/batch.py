"""`rayscale verify`: grade a JSONL file of responses against gold answers.

Input rows are `{"gold": str, "response": str, ...}`; output rows are the same rows (other fields kept, in order)
plus `pred` (str or null), `correct` (bool) and `status` (ok / no_answer / timeout / error). The whole input is
validated before any work, and the output is written to a temporary file renamed into place at the end, so a bad
row or an interrupted run never leaves a half-written output.

Pure of Ray: the grading runs on a backend, by default `process_backend` (an IsolatedVerifier's child processes);
`rayscale verify --ray` passes `rayscale.actors.verifier.pool_backend` (a Ray VerifierPool) instead.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayscale.data.loaders import DataError, iter_jsonl
from rayscale.types import VerifyResult
from rayscale.verify import STATUSES
from rayscale.verify.isolation import IsolatedVerifier

Backend = tuple[Callable[[Sequence[tuple[str, str]]], list[VerifyResult]], Callable[[], None]]  # (verify, close)
StartBackend = Callable[[int, float, int], Backend]  # (workers, timeout_s, memory_limit_mb) -> a started backend

_PROGRESS_EVERY = 2048  # rows per verify call, so a long file shows progress


@dataclass
class Summary:
    total: int = 0
    correct: int = 0
    by_status: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0  # verification only (workers already started)
    startup_s: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def responses_per_s(self) -> float:
        return self.total / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def format(self) -> str:
        counts = "  ".join(f"{s}={self.by_status.get(s, 0)}" for s in STATUSES)
        return (f"{self.total} responses: {counts}\n"
                f"accuracy {self.accuracy:.4f} ({self.correct}/{self.total})\n"
                f"{self.responses_per_s:.1f} responses/s ({self.elapsed_s:.2f}s; workers started in "
                f"{self.startup_s:.2f}s)")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """All rows of an input file, each checked for a string `gold` and `response` (an integer gold is accepted)."""
    rows = []
    for lineno, row in iter_jsonl(path):
        gold = row.get("gold")
        if isinstance(gold, int) and not isinstance(gold, bool):
            row["gold"] = gold = str(gold)
        for name, value in (("gold", gold), ("response", row.get("response"))):
            if not isinstance(value, str):
                got = "nothing (field missing)" if name not in row else (
                    "null" if value is None else f"{type(value).__name__} {value!r:.40}")
                raise DataError(f"{path}:{lineno}: field {name!r} must be a string, got {got}")
        rows.append(row)
    return rows


def process_backend(workers: int, timeout_s: float, memory_limit_mb: int) -> Backend:
    """`workers` verifier child processes (an IsolatedVerifier), started and ready: the default, no Ray."""
    verifier = IsolatedVerifier(workers, timeout_s, memory_limit_mb)
    verifier.wait_ready()
    return verifier.verify_batch, verifier.close


def verify_file(input_path: str | Path, output_path: str | Path, *, workers: int = 2, timeout_s: float = 5.0,
                memory_limit_mb: int = 4096, progress: bool = True,
                start_backend: StartBackend = process_backend) -> Summary:
    """Grade every row of `input_path` into `output_path`; the backend starts only once the whole input is valid."""
    if not Path(input_path).is_file():
        raise FileNotFoundError(f"input file not found: {input_path}")
    rows = read_rows(input_path)
    items = [(row["gold"], row["response"]) for row in rows]
    summary = Summary(total=len(rows))
    started = time.monotonic()
    verify, close = start_backend(workers, timeout_s, memory_limit_mb)
    try:
        summary.startup_s = time.monotonic() - started
        t0 = time.monotonic()
        results: list[VerifyResult] = []
        for start in range(0, len(items), _PROGRESS_EVERY):
            results.extend(verify(items[start : start + _PROGRESS_EVERY]))
            if progress and len(items) > _PROGRESS_EVERY:
                print(f"  verified {len(results)}/{len(items)}", file=sys.stderr)
        summary.elapsed_s = time.monotonic() - t0
    finally:
        close()
    for row, result in zip(rows, results):
        row.update(pred=result.pred, correct=bool(result.correct), status=result.status)  # the file's 3 fields
        summary.by_status[result.status] += 1
        summary.correct += bool(result.correct)
    _write_atomically(output_path, rows)
    return summary


def _write_atomically(path: str | Path, rows: list[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
