"""Tolerant parsers for teacher replies, and the editable prompt templates."""

from __future__ import annotations

import pytest

from rayscale.data import Problem
from rayscale.errors import ConfigError
from rayscale.teacher.parsers import (
    clean_lines,
    parse_correction,
    parse_localisation,
    parse_step_number,
    parse_thought_template,
)
from rayscale.teacher.prompting import TASKS, load_templates, parse_template, prompt_values
from rayscale.teacher.records import ThoughtTemplate

# ------------------------------------------------------------------------------------------------ correct
CANONICAL = """<IncorrectStep>2</IncorrectStep>
<Explanation>7*3 is 21, not 24</Explanation>
<Correction>
7*3=21
5+21=26
\\boxed{26}
</Correction>"""


@pytest.mark.parametrize(
    "text",
    [
        CANONICAL,
        # other tag spellings, fenced, no closing tags (a cut-off reply), numbered lines
        "```\n<incorrect step>Step 2</incorrect step>\n<explanation>7*3 is 21, not 24\n<correction>\n"
        "Step 2: 7*3=21\nStep 3: 5+21=26\n\\boxed{26}\n```",
        # label form with Markdown bold
        "**Incorrect step:** 2\n**Explanation:** 7*3 is 21,\nnot 24\n**Corrected solution:**\n1. 7*3=21\n2. 5+21=26\n"
        "\\boxed{26}",
        "Sure! Here is my analysis.\n<Incorrect_Step>the second step</Incorrect_Step>\n<Explanation>7*3 is 21, not 24"
        "</Explanation>\n<Correction>- 7*3=21\n- 5+21=26\n- \\boxed{26}</Correction>\nHope this helps.",
    ],
)
def test_correction_formats(text):
    parsed = parse_correction(text)
    assert parsed is not None
    assert parsed.wrong_step == 1  # 0-based
    assert parsed.explanation == "7*3 is 21, not 24"
    assert parsed.corrected_lines == ["7*3=21", "5+21=26", "\\boxed{26}"]


def test_correction_no_error_and_garbage():
    assert parse_correction("<IncorrectStep>none</IncorrectStep><Explanation>all fine</Explanation>").wrong_step is None
    assert parse_correction("I think the student did great.") is None
    assert parse_correction("<IncorrectStep>somewhere</IncorrectStep>") is None
    assert parse_correction("") is None


def test_negative_leading_step_survives_line_cleaning():
    assert clean_lines("-3+5=2\n  - 4*2=8\nStep 3: 2-8=-6\n3.5*2=7\n...\n") == ["-3+5=2", "4*2=8", "2-8=-6", "3.5*2=7"]


@pytest.mark.parametrize(
    "text, expected",
    [("3", 3), ("Step 3", 3), ("step #3: 7*3=24", 3), ("the third step", 3), ("none", "none"),
     ("No error", "none"), ("???", None), ("0", 0)],
)
def test_step_numbers(text, expected):
    assert parse_step_number(text) == expected


# ------------------------------------------------------------------------------------------------ localise
def test_localisation_canonical():
    text = "<Verdicts>\nStep 1: correct\nStep 2: incorrect\nStep 3: correct\n</Verdicts>\n<FirstWrong>2</FirstWrong>"
    loc = parse_localisation(text, 4)
    assert loc.first_wrong == 1
    assert loc.step_verdicts == [True, False, True, False]  # step 4 has no verdict after the error: unchecked


def test_localisation_tolerates_noise():
    text = "**Step 1** (7*3=21): ✓\nStep 2 - 5+21=27 - WRONG\nStep 3: not correct\nFirst wrong step: Step 2"
    loc = parse_localisation(text, 3)
    assert (loc.first_wrong, loc.step_verdicts) == (1, [True, False, False])


def test_localisation_falls_back_to_verdicts_and_none():
    assert parse_localisation("Step 1: correct\nStep 2: wrong\nStep 3: wrong", 3).first_wrong == 1
    all_right = parse_localisation("<Verdicts>Step 1: correct\nStep 2: correct</Verdicts><FirstWrong>none</FirstWrong>", 2)
    assert (all_right.first_wrong, all_right.step_verdicts) == (None, [True, True])
    assert parse_localisation("<FirstWrong>none</FirstWrong>", 3).step_verdicts == [True, True, True]
    assert parse_localisation("no idea", 3) is None
    # "notable" must not read as the verdict "no"
    assert parse_localisation("Step 1: notable progress", 1) is None


def test_localisation_explicit_answer_wins_and_forces_consistent_verdicts():
    loc = parse_localisation("Step 1: incorrect\nStep 2: correct\nStep 3: correct\n<FirstWrong>3</FirstWrong>", 3)
    assert (loc.first_wrong, loc.step_verdicts) == (2, [True, True, False])


# ------------------------------------------------------------------------------------------------ thought template
def test_thought_template_round_trip():
    tpl = ThoughtTemplate("p", ["7*3=21", "5+21=26"], ["multiply first", None], "do * first", "26", True, None)
    parsed = parse_thought_template(tpl.to_text())
    assert parsed.steps == tpl.steps and parsed.key_notes == tpl.key_notes
    assert parsed.generalized == "do * first" and parsed.answer_text == "\\boxed{26}"


def test_thought_template_noise():
    text = (
        "```xml\n<step 1>\nCompute 7*3 = 21.\n<key>Multiply\nbefore adding.</key>\nThen keep it.\n</step 1>\n"
        "<Step2>5+21=26\n<Step3>\n\n</Step3>\n<Generalised>Do products first.</Generalised>\nSo \\boxed{26}.\n```"
    )
    parsed = parse_thought_template(text)
    assert parsed.steps == ["Compute 7*3 = 21. Then keep it.", "5+21=26"]  # empty Step3 dropped
    assert parsed.key_notes == ["Multiply before adding.", None]
    assert parsed.generalized == "Do products first."
    assert parsed.answer_text == "26"  # no <Answer>: the last \boxed{} anywhere
    assert parse_thought_template("just prose, no steps") is None


# ------------------------------------------------------------------------------------------------ templates
PROBLEM = Problem("p1", "5+7*3=?", "26", gold_steps=("7*3=21", "5+21=26"), source="synthetic")


def test_packaged_templates_render():
    templates = load_templates()
    assert set(templates) == set(TASKS)
    values = prompt_values(PROBLEM, ["7*3=24", "5+24=29", "\\boxed{29}"], "bare")
    msgs = templates["correct"].render(values)
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    assert "5+7*3=?" in user and "Step 1: 7*3=24\nStep 2: 5+24=29\nStep 3: \\boxed{29}" in user
    assert "{{" not in user and "\\boxed{<final answer>}" in user and "3 steps" in user
    assert "The answer is <final answer>." in templates["correct"].render(prompt_values(PROBLEM, ["x"], "answer_is"))[1][
        "content"
    ]
    tt = templates["thought_template"].render(prompt_values(PROBLEM, None, "bare"))[-1]["content"]
    assert "<Generalized>" in tt and "26" in tt  # the reference answer


def test_values_are_not_expanded_twice():
    tpl = parse_template("correct", "=== user ===\n{{question}}\n{{student_steps}}", "t.md")
    text = tpl.render({"question": "what is {{student_steps}}?", "student_steps": "S"})[0]["content"]
    assert text == "what is {{student_steps}}?\nS"


def test_prompts_dir_overrides_some_files(tmp_path):
    (tmp_path / "localise.md").write_text("=== user ===\nQ: {{question}}\n{{student_steps}}\n")
    templates = load_templates(tmp_path)
    assert templates["localise"].system is None and templates["localise"].source == str(tmp_path / "localise.md")
    assert templates["correct"].source.endswith("templates/correct.md")


@pytest.mark.parametrize(
    "text, message",
    [
        ("=== user ===\n{{question}} {{student_steps}} {{answr}}", "unknown placeholder(s) {{answr}}"),
        ("=== user ===\n{{question}}", "required placeholder(s) missing: {{student_steps}}"),
        ("=== system ===\nhi", "missing or empty '=== user ==='"),
        ("hello\n=== user ===\n{{question}} {{student_steps}}", "text before the first"),
    ],
)
def test_bad_templates_name_the_file(tmp_path, text, message):
    (tmp_path / "correct.md").write_text(text)
    with pytest.raises(ConfigError) as e:
        load_templates(tmp_path)
    assert str(tmp_path / "correct.md") in str(e.value) and message in str(e.value)


def test_missing_prompts_dir(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        load_templates(tmp_path / "nope")
