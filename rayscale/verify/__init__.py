"""Answer verification, pure logic (no Ray): extraction, equivalence, step checking.

In-process and without timeouts; `rayscale.verify.isolation.IsolatedVerifier` runs the same functions in worker
processes with hard wall-clock timeouts, and `rayscale.actors.verifier.VerifierPool` spreads that over Ray actors.
"""

from __future__ import annotations

from rayscale.types import VerifyResult
from rayscale.verify.equivalence import Verdict, is_equivalent
from rayscale.verify.extract import extract_answer
from rayscale.verify.steps import check_step, first_wrong_step

STATUSES = ("ok", "no_answer", "timeout", "error")


def verify_response(gold: str, response: str) -> VerifyResult:
    """The verdict on one response against a gold answer (status ok/no_answer/error; not timed: latency_s 0.0)."""
    return grade_answer(gold, extract_answer(response))


def grade_answer(gold: str, pred: str | None) -> VerifyResult:
    """`verify_response` after extraction: the verdict on an extracted answer (None = none found)."""
    if pred is None:
        return VerifyResult(False, None, "no_answer", "no final answer found")
    verdict = is_equivalent(gold, pred)
    return VerifyResult(verdict.correct, pred, verdict.status, verdict.reason)


__all__ = [
    "STATUSES",
    "Verdict",
    "VerifyResult",
    "check_step",
    "extract_answer",
    "first_wrong_step",
    "grade_answer",
    "is_equivalent",
    "verify_response",
]
