"""LEMA's filter and the assembly of a correction from the student's prefix and the teacher's continuation.

A correction is accepted only if k is a real step index of the student's solution and the corrected solution's
final answer verifies against the gold answer. The same function serves the oracle and the model teachers, so both
produce byte-identical layouts: the student's lines before k verbatim, then the corrected lines, one per line.
"""

from __future__ import annotations

import re

from rayscale.data.problem import Problem
from rayscale.teacher.records import (
    BAD_STEP_INDEX,
    EMPTY_CORRECTION,
    NO_FINAL_ANSWER,
    WRONG_FINAL_ANSWER,
    Correction,
)
from rayscale.verify import extract_answer, is_equivalent


def _norm(line: str) -> str:
    return re.sub(r"\s+", "", line)


def states_answer(line: str) -> bool:
    return extract_answer(line) is not None


def valid_step_index(k: int, lines: list[str]) -> bool:
    """0 <= k < len(lines), or k == len(lines) when the solution ended without an answer line (k names it)."""
    return 0 <= k < len(lines) or (k == len(lines) and not (lines and states_answer(lines[-1])))


def _continuation(corrected: list[str], kept: list[str]) -> list[str]:
    # A teacher that rewrote the whole solution repeats the kept prefix: drop it rather than duplicate it.
    if kept and len(corrected) > len(kept) and [_norm(c) for c in corrected[: len(kept)]] == [_norm(k) for k in kept]:
        corrected = corrected[len(kept):]
    # Commentary after the answer line would become part of the chosen response: cut it.
    answer_at = [i for i, line in enumerate(corrected) if states_answer(line)]
    return corrected[: answer_at[-1] + 1] if answer_at else corrected


def build_correction(
    prompt_id: str, problem: Problem, lines: list[str], k: int, explanation: str, corrected_lines: list[str]
) -> Correction:
    """The correction record with LEMA's verdict; rejected ones keep their fields for inspection."""
    if not valid_step_index(k, lines):
        return Correction.rejected(prompt_id, BAD_STEP_INDEX, wrong_step=k, explanation=explanation)
    kept = list(lines[:k])
    corrected = _continuation(list(corrected_lines), kept)
    solution = "\n".join(kept + corrected)
    final = extract_answer(corrected[-1]) if corrected else None
    reason = None
    if not corrected:
        reason = EMPTY_CORRECTION
    elif final is None:
        reason = NO_FINAL_ANSWER
    elif not is_equivalent(problem.gold_answer, final).correct:
        reason = WRONG_FINAL_ANSWER
    return Correction(prompt_id, k, explanation, kept, corrected, solution, final, reason is None, reason)
