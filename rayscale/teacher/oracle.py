"""The oracle teacher: first-error localisation and corrections from a problem's gold step-by-step solution.

Two regimes, by how the gold steps relate to a student's:
- aligned (the synthetic task): the solution is determined step by step, so the first wrong step is the first
  line not identical (whitespace aside) to the gold line at that index; the answer line is checked by answer
  equivalence; the continuation is the gold lines from k, laid out exactly as the student's SFT data
  (`rayscale.prompts.format_solution`), so the tiny student learns corrections in its own format.
- checked (GSM8K and any source with gold steps): students phrase steps their own way, so the first wrong step is
  the first false arithmetic claim (`rayscale.verify.first_wrong_step`, which reads `<<a*b=c>>` annotations); if
  all arithmetic holds but the answer is wrong, the first step computing a quantity the gold solution never
  computes; else the answer line. The continuation is the gold steps not yet covered by the student's kept
  prefix, then the answer line.
"""

from __future__ import annotations

import re
from fractions import Fraction

from rayscale.data.problem import Problem
from rayscale.prompts import PromptStyle, answer_line
from rayscale.teacher.acceptance import build_correction, states_answer
from rayscale.teacher.records import NO_ERROR_FOUND, NO_GOLD_STEPS, Correction, Localisation, ThoughtTemplate
from rayscale.verify import check_step, extract_answer, first_wrong_step, is_equivalent

_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_RESULT = re.compile(r"=\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)")


def _norm(line: str) -> str:
    return re.sub(r"\s+", "", line)


def is_aligned(problem: Problem) -> bool:
    return problem.source == "synthetic"


def _answer_verdict(problem: Problem, line: str) -> tuple[str | None, bool]:
    pred = extract_answer(line)
    return pred, pred is not None and is_equivalent(problem.gold_answer, pred).correct


def _line_valid(problem: Problem, line: str) -> bool:
    """A line's own validity, whatever came before it: its arithmetic holds and any answer it states verifies."""
    if check_step(line) is False:
        return False
    return not states_answer(line) or _answer_verdict(problem, line)[1]


def _wrong_answer_explanation(problem: Problem, lines: list[str], k: int) -> str:
    if k >= len(lines):
        return f"the answer line is missing: the final answer is {problem.gold_answer}"
    pred = extract_answer(lines[k])
    if pred is None:
        return f"the last line must state the final answer, {problem.gold_answer}"
    return f"the final answer is {problem.gold_answer}, not {pred}"


# ------------------------------------------------------------------------------------------------ aligned
def _aligned_step_explanation(student: str, gold: str) -> str:
    s_lhs, s_eq, s_rhs = student.rpartition("=")
    g_lhs, _, g_rhs = gold.rpartition("=")
    if s_eq and _norm(s_lhs) == _norm(g_lhs):
        return f"{g_lhs.strip()} is {g_rhs.strip()}, not {s_rhs.strip()}"
    hint = " (multiply before adding or subtracting)" if "*" in g_lhs and "*" not in (s_lhs if s_eq else student) else ""
    return f"the next step is {gold}, not {student}{hint}"


def _aligned_first_wrong(problem: Problem, lines: list[str]) -> tuple[int | None, str]:
    gold = problem.gold_steps or ()
    for i, g in enumerate(gold):
        if i >= len(lines):
            return i, f"the solution stops early: the next step is {g}"
        if _norm(lines[i]) != _norm(g):
            return i, _aligned_step_explanation(lines[i], g)
    a = len(gold)
    if a >= len(lines) or not _answer_verdict(problem, lines[a])[1]:
        return a, _wrong_answer_explanation(problem, lines, a)
    if a + 1 < len(lines):
        return a + 1, "the solution is complete after the answer line"
    return None, ""


# ------------------------------------------------------------------------------------------------ checked
def _number(text: str) -> Fraction | None:
    try:
        return Fraction(text.replace(",", "").strip().rstrip("."))
    except (ValueError, ZeroDivisionError):
        return None


def _result_value(line: str) -> Fraction | None:
    """The quantity a step computes: its annotation's result, else the last `= number`."""
    annotations = _ANNOTATION.findall(line)
    if annotations:
        return _number(annotations[-1][1])
    found = _RESULT.findall(line)
    return _number(found[-1]) if found else None


def _claim(step: str) -> str:
    """What a step computes, short: its last `<<a*b=c>>` annotation as `a*b=c`, else the line."""
    found = _ANNOTATION.findall(step)
    return f"{found[-1][0].strip()}={found[-1][1].strip()}" if found else step.strip()


def _arithmetic_explanation(problem: Problem, line: str) -> str:
    gold_results = {_norm(lhs): rhs.strip() for step in problem.gold_steps or () for lhs, rhs in _ANNOTATION.findall(step)}
    for lhs, rhs in _ANNOTATION.findall(line):
        if _norm(lhs) in gold_results and _number(gold_results[_norm(lhs)]) != _number(rhs):
            return f"{lhs.strip()} is {gold_results[_norm(lhs)]}, not {rhs.strip()}"
    return f"the arithmetic in {_claim(line)} is wrong"


def _checked_first_wrong(problem: Problem, lines: list[str]) -> tuple[int | None, str]:
    has_answer = bool(lines) and states_answer(lines[-1])
    steps = lines[:-1] if has_answer else lines
    k = first_wrong_step(steps)
    if k is not None:
        return k, _arithmetic_explanation(problem, steps[k])
    if has_answer and _answer_verdict(problem, lines[-1])[1]:
        return None, ""
    gold = problem.gold_steps or ()
    if not gold:  # no gold steps to compare with (MATH): blame the answer line
        return len(steps), _wrong_answer_explanation(problem, lines, len(steps))
    gold_values = {v for v in map(_result_value, gold) if v is not None}
    for i, line in enumerate(steps):
        value = _result_value(line)
        if value is not None and value not in gold_values:
            covered = _covered(problem, steps[:i])
            hint = f"; the next step is {_claim(gold[covered])}" if covered < len(gold) else ""
            return i, f"{_claim(line)} is not a quantity this problem needs{hint}"
    return len(steps), _wrong_answer_explanation(problem, lines, len(steps))


def _covered(problem: Problem, kept: list[str]) -> int:
    """How many leading gold steps the kept prefix already computed (matched by their result values)."""
    values = {v for v in map(_result_value, kept) if v is not None}
    n = 0
    for step in problem.gold_steps or ():
        if _result_value(step) not in values:
            break
        n += 1
    return n


# ------------------------------------------------------------------------------------------------ public
def first_wrong(problem: Problem, lines: list[str]) -> tuple[int | None, str]:
    """(k, explanation): the first wrong line (may be len(lines): a missing step or answer line), or (None, "")."""
    return _aligned_first_wrong(problem, lines) if is_aligned(problem) else _checked_first_wrong(problem, lines)


def localise(prompt_id: str, problem: Problem, lines: list[str], style: PromptStyle = "bare") -> Localisation:
    if is_aligned(problem) and not problem.gold_steps:
        return Localisation([], None, prompt_id, reject_reason=NO_GOLD_STEPS)
    k, why = first_wrong(problem, lines)
    if k is None:
        return Localisation([True] * len(lines), None, prompt_id)
    verdicts = [True] * min(k, len(lines)) + [False] * (k < len(lines))
    verdicts += [_line_valid(problem, line) for line in lines[k + 1 :]]
    return Localisation(verdicts, k, prompt_id, explanation=why)


def continuation(problem: Problem, lines: list[str], k: int, style: PromptStyle) -> list[str]:
    """The gold lines from step k on, ending with the answer line in the student's layout."""
    gold = list(problem.gold_steps or ())
    start = k if is_aligned(problem) else _covered(problem, lines[:k])
    return gold[start:] + [answer_line(problem.gold_answer, style)]


def correct(prompt_id: str, problem: Problem, lines: list[str], style: PromptStyle = "bare") -> Correction:
    if not problem.gold_steps:
        return Correction.rejected(prompt_id, NO_GOLD_STEPS)
    k, why = first_wrong(problem, lines)
    if k is None:
        return Correction.rejected(prompt_id, NO_ERROR_FOUND)
    if k > len(problem.gold_steps) and is_aligned(problem):  # lines after a right answer: nothing to write
        return build_correction(prompt_id, problem, lines, k, why, [])
    return build_correction(prompt_id, problem, lines, k, why, continuation(problem, lines, k, style))


# ------------------------------------------------------------------------------------------------ templates
_GENERALIZED = {
    "synthetic": "To evaluate an expression with +, - and *, do every multiplication first, then the additions and "
    "subtractions from left to right, one operation per step, each step using the results before it.",
    "default": "Name the quantities the problem gives, compute each unknown quantity from ones already known, "
    "one calculation per step, and stop when the quantity asked for is found.",
}


def _key_note(problem: Problem, step: str) -> str | None:
    if is_aligned(problem):
        return "multiply first: * binds tighter than + and -" if "*" in step else None
    for lhs, rhs in _ANNOTATION.findall(step):
        if len(re.findall(r"[-+*/]", lhs.lstrip("-"))) >= 2 or "/" in lhs:
            return f"work {lhs.strip()} out carefully: it is {rhs.strip()}"
    return None


def thought_template(problem: Problem) -> ThoughtTemplate:
    if not problem.gold_steps:
        return ThoughtTemplate(problem.id, [], [], "", None, False, NO_GOLD_STEPS)
    steps = list(problem.gold_steps)
    generalized = _GENERALIZED["synthetic" if is_aligned(problem) else "default"]
    notes = [_key_note(problem, s) for s in steps]
    return ThoughtTemplate(problem.id, steps, notes, generalized, problem.gold_answer, True, None)
