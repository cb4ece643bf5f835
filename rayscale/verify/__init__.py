"""Answer verification, pure logic (no Ray): extraction, equivalence, step checking.

In-process and without timeouts; `rayscale.verify.isolation.IsolatedVerifier` runs the same functions in worker
processes with hard wall-clock timeouts, and `rayscale.actors.verifier.VerifierPool` spreads that over Ray actors.
"""

from __future__ import annotations

from rayscale.verify.equivalence import Verdict, is_equivalent
from rayscale.verify.extract import extract_answer
from rayscale.verify.steps import check_step, first_wrong_step

STATUSES = ("ok", "no_answer", "timeout", "error")


def verify_response(gold: str, response: str) -> dict:
    """{correct, pred, status, reason} for one response against a gold answer; status is ok/no_answer/error."""
    return grade_answer(gold, extract_answer(response))


def grade_answer(gold: str, pred: str | None) -> dict:
    """`verify_response` after extraction: {correct, pred, status, reason} for an extracted answer (None = none)."""
    if pred is None:
        return {"correct": False, "pred": None, "status": "no_answer", "reason": "no final answer found"}
    verdict = is_equivalent(gold, pred)
    return {"correct": verdict.correct, "pred": pred, "status": verdict.status, "reason": verdict.reason}


__all__ = [
    "STATUSES",
    "Verdict",
    "check_step",
    "extract_answer",
    "first_wrong_step",
    "grade_answer",
    "is_equivalent",
    "verify_response",
]
