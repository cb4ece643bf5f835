"""What the teacher is asked (a student's solution) and returns: thought templates, first-error localisations,
corrections.

Step indices are 0-based over the student's solution lines (`rayscale.text.split_steps`, answer line included);
the prompts show them 1-based ("Step 1") because that is how models count, and the parsers convert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing a record must not pull in the data layer (pydantic config)
    from rayscale.data.problem import Problem
    from rayscale.prompts import PromptStyle

# Why an output was rejected. Counted by reason in `stats()`; a rejected record still comes back in its slot.
REQUEST_FAILED = "request_failed"  # the backend gave no text (HTTP failure after retries, truncated, generate error)
UNPARSEABLE = "unparseable"  # no step index / no sections could be read from the text
NO_ERROR_FOUND = "no_error_found"  # the teacher (or the oracle) found no wrong step to correct
BAD_STEP_INDEX = "bad_step_index"  # k is not one of the student's steps
EMPTY_CORRECTION = "empty_correction"  # nothing left after step k
NO_FINAL_ANSWER = "no_final_answer"  # the corrected solution states no final answer
WRONG_FINAL_ANSWER = "wrong_final_answer"  # ...or one that does not verify against the gold answer
NO_GOLD_STEPS = "no_gold_steps"  # the oracle needs a gold step-by-step solution
BAD_ITEM = "bad_item"  # the request itself is malformed (missing problem / solution)

TEACHER_UNAVAILABLE = "teacher_unavailable"  # the teacher actor died with the batch (the controller restarts it)
INTERNAL_ERROR = "internal_error"  # a bug in a backend cost the batch
# Rejections where the teacher gave no answer at all (as opposed to an answer that failed a check).
NO_ANSWER = (REQUEST_FAILED, TEACHER_UNAVAILABLE, INTERNAL_ERROR)

REJECT_REASONS = (
    REQUEST_FAILED, UNPARSEABLE, NO_ERROR_FOUND, BAD_STEP_INDEX, EMPTY_CORRECTION, NO_FINAL_ANSWER,
    WRONG_FINAL_ANSWER, NO_GOLD_STEPS, BAD_ITEM,
)


def failure_reason(reject_reason: str | None, meta: dict) -> str | None:
    """Why the teacher gave no answer for an item: the backend's reason for a failed request (`http_429`,
    `timeout`, `connection`, `malformed_json`...), else the rejection's (None: it answered, or was not asked)."""
    if reject_reason not in NO_ANSWER:
        return None
    return meta.get("backend_error") or reject_reason


@dataclass(frozen=True)
class CorrectionRequest:
    """One student solution for the teacher: `correct` and `localise` each take a list of them (a dict with these
    keys is read the same way, for scripts)."""

    problem: Problem  # or its dict (`Problem.to_dict()`)
    student_solution: str  # one step per line, the final answer line last
    prompt_id: str | None = None  # None: the problem's id
    style: PromptStyle | None = None  # answer-line layout of the correction; None: inferred from the last line


@dataclass
class ThoughtTemplate:
    """SuperCorrect's hierarchical thought template: steps, `<Key>` notes on hard ones, a generalised summary."""

    prompt_id: str
    steps: list[str]
    key_notes: list[str | None]  # one per step; None where the step needs no note
    generalized: str
    answer: str | None
    accepted: bool = False
    reject_reason: str | None = None

    def to_text(self) -> str:
        """The tagged layout (the stage-1 SFT target); `parse_thought_template` reads it back unchanged."""
        parts = []
        for i, (step, key) in enumerate(zip(self.steps, self.key_notes), start=1):
            note = f"\n<Key>{key}</Key>" if key else ""
            parts.append(f"<Step{i}>\n{step}{note}\n</Step{i}>")
        parts.append(f"<Generalized>{self.generalized}</Generalized>")
        parts.append(f"<Answer>\\boxed{{{self.answer}}}</Answer>" if self.answer is not None else "<Answer></Answer>")
        return "\n".join(parts)


@dataclass
class Localisation:
    """Step-DPO's first-error localisation over the student's lines.

    `first_wrong` may equal `len(step_verdicts)`: the solution stopped before a needed step or its answer line.
    `step_verdicts[i]` is True before `first_wrong` and False at it; after it, each line's own validity.
    """

    step_verdicts: list[bool]
    first_wrong: int | None
    prompt_id: str = ""
    explanation: str = ""
    reject_reason: str | None = None  # set when no localisation could be made (verdicts then empty)

    @property
    def ok(self) -> bool:
        return self.reject_reason is None


@dataclass
class Correction:
    """LEMA's (incorrect step, explanation, corrected solution). The pair's chosen side is
    `kept_prefix_steps + corrected_steps`, joined one per line (= `corrected_solution`)."""

    prompt_id: str
    wrong_step: int  # k, 0-based; -1 when none could be read
    explanation: str
    kept_prefix_steps: list[str]  # the student's lines before k, verbatim
    corrected_steps: list[str]  # from k on, the final answer line last
    corrected_solution: str
    final_answer: str | None
    accepted: bool
    reject_reason: str | None
    meta: dict = field(default_factory=dict)  # e.g. the backend's failure reason for request_failed

    @classmethod
    def rejected(cls, prompt_id: str, reason: str, wrong_step: int = -1, explanation: str = "", **meta) -> Correction:
        return cls(prompt_id, wrong_step, explanation, [], [], "", None, False, reason, dict(meta))
