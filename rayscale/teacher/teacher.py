"""The teacher behind `TeacherActor`: one interface, three backends (oracle, OpenAI-compatible API, local model).

Batch calls never raise for a per-item problem: a malformed item, a failed request, an unreadable reply or a
correction that fails LEMA's filter each comes back as a rejected record in its own slot, with its reason counted.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rayscale.config import TeacherConfig
from rayscale.data.problem import Problem
from rayscale.errors import ConfigError
from rayscale.prompts import PromptStyle
from rayscale.teacher import oracle
from rayscale.teacher.acceptance import build_correction, valid_step_index
from rayscale.teacher.local_backend import make_local_backend
from rayscale.teacher.openai_client import ChatResult, Messages, OpenAIChatClient
from rayscale.teacher.parsers import parse_correction, parse_localisation, parse_thought_template
from rayscale.teacher.prompting import PromptTemplate, load_templates, prompt_values
from rayscale.teacher.records import (
    BAD_ITEM,
    BAD_STEP_INDEX,
    INTERNAL_ERROR,
    NO_ERROR_FOUND,
    NO_FINAL_ANSWER,
    REQUEST_FAILED,
    UNPARSEABLE,
    WRONG_FINAL_ANSWER,
    Correction,
    CorrectionRequest,
    Localisation,
    ThoughtTemplate,
)
from rayscale.teacher.stats import TeacherStats
from rayscale.text import split_steps
from rayscale.verify import extract_answer, is_equivalent

log = logging.getLogger(__name__)
_ANSWER_IS = re.compile(r"the\s+(?:final\s+)?answer\s+is", re.IGNORECASE)


@dataclass
class TeacherItem:
    prompt_id: str
    problem: Problem
    lines: list[str]  # the student's solution, one step per line (answer line included)
    style: PromptStyle  # layout of the answer line the correction must end with


class ChatBackend(Protocol):
    def complete(self, conversations: Sequence[Messages]) -> list[ChatResult]: ...


def infer_style(lines: list[str]) -> PromptStyle:
    """The answer-line layout the student used ("The answer is N." or \\boxed{N}); boxed when there is none."""
    return "answer_is" if lines and _ANSWER_IS.search(lines[-1]) else "bare"


def read_item(item: Any) -> TeacherItem | str:
    """A validated CorrectionRequest (or a dict with its keys), or a message saying what is wrong with it."""
    if isinstance(item, CorrectionRequest):
        problem, solution, prompt_id, style = item.problem, item.student_solution, item.prompt_id, item.style
    elif isinstance(item, dict):
        problem, solution, style = item.get("problem"), item.get("student_solution"), item.get("style")
        prompt_id = item.get("prompt_id")
    else:
        return f"item is a {type(item).__name__}, expected a CorrectionRequest (or its dict)"
    try:
        problem = problem if isinstance(problem, Problem) else Problem.from_dict(problem)
    except (KeyError, TypeError, AttributeError) as e:
        return f"'problem' is not a Problem or its dict ({type(e).__name__}: {e})"
    if not isinstance(solution, str):
        return f"'student_solution' must be a string, got {type(solution).__name__}"
    lines = split_steps(solution)
    prompt_id = problem.id if prompt_id is None else prompt_id
    return TeacherItem(str(prompt_id), problem, lines, style or infer_style(lines))


class Teacher:
    """Item validation, per-item isolation and bookkeeping; subclasses implement the three batch tasks."""

    name = "teacher"

    def __init__(self) -> None:
        self._stats = TeacherStats(self.name)

    # ------------------------------------------------------------------------------------------ public API
    def correct(self, items: Sequence[CorrectionRequest | dict]) -> list[Correction]:
        return self._run(
            "correct", items, read_item, self._correct_batch,
            lambda pid, reason: Correction.rejected(pid, reason), lambda c: c.reject_reason,
        )

    def localise(self, items: Sequence[CorrectionRequest | dict]) -> list[Localisation]:
        return self._run(
            "localise", items, read_item, self._localise_batch,
            lambda pid, reason: Localisation([], None, pid, reject_reason=reason), lambda loc: loc.reject_reason,
        )

    def thought_templates(self, problems: Sequence[Problem | dict]) -> list[ThoughtTemplate]:
        return self._run(
            "thought_template", problems, _read_problem, self._templates_batch,
            lambda pid, reason: ThoughtTemplate(pid, [], [], "", None, False, reason), lambda t: t.reject_reason,
        )

    def stats(self) -> dict:
        return self._stats.as_dict()

    # ------------------------------------------------------------------------------------------ subclass hooks
    def _correct_batch(self, items: list[TeacherItem]) -> list[Correction]:
        raise NotImplementedError

    def _localise_batch(self, items: list[TeacherItem]) -> list[Localisation]:
        raise NotImplementedError

    def _templates_batch(self, problems: list[Problem]) -> list[ThoughtTemplate]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ plumbing
    def _run(self, task: str, raw: Sequence, read: Callable, batch: Callable, reject: Callable, reason_of: Callable):
        start = time.monotonic()
        out: list = [None] * len(raw)
        valid, slots = [], []
        for i, item in enumerate(raw):
            read_out = read(item)
            if isinstance(read_out, str):
                log.warning("teacher %s: item %d rejected: %s", task, i, read_out)
                out[i] = reject(_raw_pid(item), BAD_ITEM)
            else:
                valid.append(read_out)
                slots.append(i)
        if valid:
            try:
                results = batch(valid)
            except Exception:  # a bug in one backend must cost this batch, not the training loop
                log.exception("teacher %s: batch of %d failed", task, len(valid))
                results = [reject(_pid(v), INTERNAL_ERROR) for v in valid]
            for i, r in zip(slots, results):
                out[i] = r
        for r in out:
            self._stats.record_outcome(task, reason_of(r))
        self._stats.add_seconds(task, time.monotonic() - start)
        return out


def _pid(item: TeacherItem | Problem) -> str:
    return item.prompt_id if isinstance(item, TeacherItem) else item.id


def _raw_pid(item: Any) -> str:
    """The id of an item that failed validation, as far as it can be read ("" when none)."""
    if isinstance(item, CorrectionRequest):
        return str(item.prompt_id or "")
    return str((item.get("prompt_id") or item.get("id") or "") if isinstance(item, dict) else "")


def _read_problem(p: Any) -> Problem | str:
    if isinstance(p, Problem):
        return p
    try:
        return Problem.from_dict(p)
    except (KeyError, TypeError, AttributeError) as e:
        return f"not a Problem or its dict ({type(e).__name__}: {e})"


# ================================================================================================ oracle
class OracleTeacher(Teacher):
    """Gold-solution teacher: exact, free, offline (the default run's teacher)."""

    name = "oracle"

    def _correct_batch(self, items):
        return [oracle.correct(it.prompt_id, it.problem, it.lines, it.style) for it in items]

    def _localise_batch(self, items):
        return [oracle.localise(it.prompt_id, it.problem, it.lines, it.style) for it in items]

    def _templates_batch(self, problems):
        return [oracle.thought_template(p) for p in problems]


# ================================================================================================ model teachers
class ChatTeacher(Teacher):
    """A chat model (API or local) prompted with the template files; its replies parsed and filtered."""

    def __init__(self, backend: ChatBackend, templates: dict[str, PromptTemplate], name: str):
        self.name = name
        super().__init__()
        self.backend = backend
        self.templates = templates

    def _ask(self, task: str, values: list[dict[str, str]]) -> list[ChatResult]:
        results = self.backend.complete([self.templates[task].render(v) for v in values])
        self._stats.record_requests(results)
        return results

    def _correct_batch(self, items):
        results = self._ask("correct", [prompt_values(it.problem, it.lines, it.style) for it in items])
        return [self._correction(it, r) for it, r in zip(items, results)]

    def _correction(self, it: TeacherItem, r: ChatResult) -> Correction:
        if not r.ok:
            return Correction.rejected(it.prompt_id, REQUEST_FAILED, backend_error=r.error_reason)
        parsed = parse_correction(r.text or "")
        if parsed is None:
            return Correction.rejected(it.prompt_id, UNPARSEABLE)
        if parsed.wrong_step is None:
            return Correction.rejected(it.prompt_id, NO_ERROR_FOUND, explanation=parsed.explanation)
        return build_correction(
            it.prompt_id, it.problem, it.lines, parsed.wrong_step, parsed.explanation, parsed.corrected_lines
        )

    def _localise_batch(self, items):
        results = self._ask("localise", [prompt_values(it.problem, it.lines, it.style) for it in items])
        out = []
        for it, r in zip(items, results):
            if not r.ok:
                out.append(Localisation([], None, it.prompt_id, reject_reason=REQUEST_FAILED))
                continue
            parsed = parse_localisation(r.text or "", len(it.lines))
            if parsed is None:
                out.append(Localisation([], None, it.prompt_id, reject_reason=UNPARSEABLE))
            elif parsed.first_wrong is not None and not valid_step_index(parsed.first_wrong, it.lines):
                out.append(Localisation([], None, it.prompt_id, reject_reason=BAD_STEP_INDEX))
            else:
                out.append(Localisation(parsed.step_verdicts, parsed.first_wrong, it.prompt_id))
        return out

    def _templates_batch(self, problems):
        results = self._ask("thought_template", [prompt_values(p, None, "bare") for p in problems])
        return [self._template(p, r) for p, r in zip(problems, results)]

    @staticmethod
    def _template(problem: Problem, r: ChatResult) -> ThoughtTemplate:
        if not r.ok:
            return ThoughtTemplate(problem.id, [], [], "", None, False, REQUEST_FAILED)
        parsed = parse_thought_template(r.text or "")
        if parsed is None:
            return ThoughtTemplate(problem.id, [], [], "", None, False, UNPARSEABLE)
        answer = extract_answer(parsed.answer_text) if parsed.answer_text else None
        if answer is None and parsed.answer_text:
            answer = parsed.answer_text.strip()
        reason = None
        if answer is None:
            reason = NO_FINAL_ANSWER
        elif not is_equivalent(problem.gold_answer, answer).correct:
            reason = WRONG_FINAL_ANSWER
        return ThoughtTemplate(
            problem.id, parsed.steps, parsed.key_notes, parsed.generalized, answer, reason is None, reason
        )


# ================================================================================================ factory
def make_teacher(cfg: TeacherConfig, model_path: str | None = None) -> Teacher:
    if cfg.backend == "oracle":
        return OracleTeacher()
    templates = load_templates(cfg.prompts_dir)
    if cfg.backend == "openai":
        return ChatTeacher(OpenAIChatClient(cfg.openai), templates, "openai")
    path = model_path or cfg.local.model_path
    if not path:
        raise ConfigError("teacher.backend=local needs teacher.local.model_path (an HF directory or hub id)")
    return ChatTeacher(make_local_backend(path, cfg.local), templates, "local")
