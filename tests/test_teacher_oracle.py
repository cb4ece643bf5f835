"""The oracle teacher on the synthetic task (exact student format) and on real GSM8K solutions."""

from __future__ import annotations

import json
import random

import pytest

from rayscale.config import SyntheticTaskConfig
from rayscale.data import Problem, load_problems, synthetic_splits
from rayscale.prompts import answer_line, format_solution
from rayscale.teacher.parsers import parse_thought_template
from rayscale.teacher.records import (
    BAD_ITEM,
    EMPTY_CORRECTION,
    NO_ERROR_FOUND,
    NO_GOLD_STEPS,
    CorrectionRequest,
)
from rayscale.teacher.teacher import OracleTeacher

# 5+7*3-4 = 22, solved as 7*3=21, 5+21=26, 26-4=22
P = Problem("synthetic/test/x", "5+7*3-4=?", "22", "7*3=21\n5+21=26\n26-4=22\n\\boxed{22}",
            ("7*3=21", "5+21=26", "26-4=22"), "synthetic")


def _one(solution: str, method: str = "correct", problem: Problem = P, **extra):
    teacher = OracleTeacher()
    return getattr(teacher, method)([CorrectionRequest(problem, solution, "q", **extra)])[0]


@pytest.mark.parametrize(
    "student, k, explanation",
    [
        ("7*3=24\n5+24=29\n29-4=25\n\\boxed{25}", 0, "7*3 is 21, not 24"),
        ("7*3=21\n5+21=27\n27-4=23\n\\boxed{23}", 1, "5+21 is 26, not 27"),
        ("5+7=12\n12*3=36\n36-4=32\n\\boxed{32}", 0,
         "the next step is 7*3=21, not 5+7=12 (multiply before adding or subtracting)"),
        ("7*3=21\n5+21=26\n26-4=22\n\\boxed{23}", 3, "the final answer is 22, not 23"),
        ("7*3=21\n5+21=26\n26-4=22", 3, "the answer line is missing: the final answer is 22"),
        ("7*3=21\n5+21=26", 2, "the solution stops early: the next step is 26-4=22"),
        ("7*3=21\n5+21=26\n26-4=22\n22", 3, "the last line must state the final answer, 22"),
    ],
)
def test_synthetic_first_error_and_explanation(student, k, explanation):
    c = _one(student)
    assert (c.wrong_step, c.explanation, c.accepted, c.reject_reason) == (k, explanation, True, None)
    lines = student.splitlines()
    assert c.kept_prefix_steps == lines[:k]
    assert c.corrected_steps == [*P.gold_steps[k:], "\\boxed{22}"]
    # the chosen response is exactly the student's gold SFT layout
    assert c.corrected_solution == format_solution(P.gold_steps, "22") and c.final_answer == "22"
    loc = _one(student, "localise")
    assert loc.first_wrong == k and loc.explanation == explanation
    assert loc.step_verdicts[:k] == [True] * min(k, len(lines)) and len(loc.step_verdicts) == len(lines)
    if k < len(lines):
        assert loc.step_verdicts[k] is False


def test_answer_is_style_and_verbatim_prefix():
    student = "7 * 3 = 21\n5+21=26\n26-4=20\nThe answer is 20."
    c = _one(student)
    assert c.wrong_step == 2 and c.kept_prefix_steps == ["7 * 3 = 21", "5+21=26"]  # verbatim, spaces and all
    assert c.corrected_steps == ["26-4=22", "The answer is 22."]
    boxed = _one("7*3=21\n5+21=26\n26-4=20\nThe answer is 20.", style="boxed")  # an explicit style wins
    assert boxed.corrected_steps[-1] == "\\boxed{22}"
    assert _one("7*3=21\n5+21=26\n26-4=20\nThe answer is 20.").corrected_solution == format_solution(
        P.gold_steps, "22", "answer_is"
    )


def test_nothing_to_correct():
    assert _one(P.gold_solution).reject_reason == NO_ERROR_FOUND
    assert _one(P.gold_solution, "localise").first_wrong is None
    tail = _one(P.gold_solution + "\n1+1=2")  # chatter after a right answer: k names it, nothing to write
    assert (tail.wrong_step, tail.reject_reason) == (4, EMPTY_CORRECTION)


def test_random_corruptions_are_all_localised_and_accepted():
    rng = random.Random(0)
    problems = synthetic_splits(SyntheticTaskConfig(train_size=1, test_size=300))["test"]
    items, expected = [], []
    for p in problems:
        lines = list(p.gold_steps) + [answer_line(p.gold_answer)]
        k = rng.randrange(len(lines))
        lhs, _, rhs = lines[k].rpartition("=")
        lines[k] = f"{lhs}={int(rhs) + rng.choice([-2, -1, 1, 3])}" if k < len(p.gold_steps) else "\\boxed{-1}"
        items.append(CorrectionRequest(p.to_dict(), "\n".join(lines), p.id))  # a problem may come as its dict
        expected.append(k)
    teacher = OracleTeacher()
    corrections = teacher.correct(items)
    assert [c.wrong_step for c in corrections] == expected
    assert all(c.accepted for c in corrections)
    assert [c.prompt_id for c in corrections] == [p.id for p in problems]
    assert all(c.corrected_solution == p.gold_solution for c, p in zip(corrections, problems))
    stats = teacher.stats()["tasks"]["correct"]
    assert isinstance(stats.pop("seconds"), float) and stats == {"items": 300, "accepted": 300, "rejected": {}}


def test_thought_template_synthetic():
    (tpl,) = OracleTeacher().thought_templates([P])
    assert tpl.accepted and tpl.steps == list(P.gold_steps) and tpl.answer == "22"
    assert tpl.key_notes == ["multiply first: * binds tighter than + and -", None, None]
    parsed = parse_thought_template(tpl.to_text())
    assert parsed.steps == tpl.steps and parsed.key_notes == tpl.key_notes and parsed.generalized == tpl.generalized
    assert tpl.to_text().startswith("<Step1>\n7*3=21\n<Key>") and tpl.to_text().endswith("<Answer>\\boxed{22}</Answer>")


def test_bad_items_and_problems_without_gold_steps():
    math = Problem("m1", "What is $1/2+1/4$?", "\\frac{3}{4}", "so \\boxed{\\frac34}", None, "math500")
    teacher = OracleTeacher()
    out = teacher.correct([
        CorrectionRequest(math, "1/2+1/4=2/6\n\\boxed{\\frac{1}{3}}", "a"),
        CorrectionRequest({"id": "x"}, "1", "b"),
        CorrectionRequest(P, None, "c"),
        "not a request",
        {"problem": P, "student_solution": None, "prompt_id": "d"},  # a dict with the request's keys is read too
    ])
    assert [c.reject_reason for c in out] == [NO_GOLD_STEPS, BAD_ITEM, BAD_ITEM, BAD_ITEM, BAD_ITEM]
    assert [c.prompt_id for c in out] == ["a", "b", "c", "", "d"]
    assert teacher.stats()["tasks"]["correct"]["rejected"] == {NO_GOLD_STEPS: 1, BAD_ITEM: 4}
    assert teacher.thought_templates([math])[0].reject_reason == NO_GOLD_STEPS
    loc = teacher.localise([{"problem": math, "student_solution": "1/2+1/4=2/6\n\\boxed{\\frac{1}{3}}"}])[0]
    assert loc.first_wrong == 0  # the false arithmetic claim 1/2+1/4=2/6, even without gold steps
    assert loc.prompt_id == "m1"  # no prompt_id: the problem's id


# ------------------------------------------------------------------------------------------------ GSM8K
JANET = (
    "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.",
    "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer’s market.",
)


@pytest.fixture(scope="module")
def gsm8k(shared_data):
    return load_problems("gsm8k", split="test")


def test_gsm8k_arithmetic_error(gsm8k):
    janet = gsm8k[0]
    assert janet.gold_steps == JANET
    c = _one("She sells 16-3-4 = <<16-3-4=8>>8 eggs.\nShe makes 8*2=<<8*2=16>>16 dollars.\n\\boxed{16}", problem=janet)
    assert (c.wrong_step, c.explanation, c.accepted) == (0, "16-3-4 is 9, not 8", True)
    assert c.corrected_steps == [*JANET, "\\boxed{18}"]


def test_gsm8k_keeps_a_right_prefix_and_continues_from_the_gold_step_it_reached(gsm8k):
    student = "She has 16-3-4=<<16-3-4=9>>9 eggs left.\nShe makes 9*3=<<9*3=27>>27 dollars.\nThe answer is 27."
    c = _one(student, problem=gsm8k[0])
    assert c.wrong_step == 1 and c.kept_prefix_steps == ["She has 16-3-4=<<16-3-4=9>>9 eggs left."]
    assert "9*3=27 is not a quantity this problem needs; the next step is 9*2=18" == c.explanation
    assert c.corrected_steps == [JANET[1], "The answer is 18."] and c.accepted


def test_gsm8k_real_wrong_model_solutions_are_all_corrected(gsm8k, shared_data):
    rows = [json.loads(line) for line in open(shared_data / "gsm8k_example_model_solutions.jsonl")]
    wrong = [(p, r["6b_finetuning"]["solution"]) for p, r in zip(gsm8k, rows) if not r["6b_finetuning"]["is_correct"]]
    right = [(p, r["6b_finetuning"]["solution"]) for p, r in zip(gsm8k, rows) if r["6b_finetuning"]["is_correct"]]
    teacher = OracleTeacher()
    corrections = teacher.correct([CorrectionRequest(p, s, p.id) for p, s in wrong])
    assert len(wrong) > 900 and all(c.accepted for c in corrections)
    assert all(c.corrected_steps[-1] == f"\\boxed{{{p.gold_answer}}}" for c, (p, _) in zip(corrections, wrong))
    locs = teacher.localise([CorrectionRequest(p, s) for p, s in right])
    no_error = sum(loc.first_wrong is None for loc in locs) / len(locs)
    assert no_error > 0.95  # right answers whose every arithmetic claim also checks out


def test_gsm8k_thought_template(gsm8k):
    (tpl,) = OracleTeacher().thought_templates([gsm8k[0]])
    assert tpl.accepted and tpl.steps == list(JANET) and tpl.answer == "18"
    assert tpl.key_notes == ["work 16-3-4 out carefully: it is 9", None]
