"""Final-answer extraction and verify_response, including inputs built to be slow."""

from __future__ import annotations

import pytest

from rayscale.types import VerifyResult
from rayscale.verify import extract_answer, verify_response

CASES = [
    (r"so the result is \boxed{42}.", "42"),
    (r"first \boxed{1}, then after checking \boxed{\frac{a}{b}}", r"\frac{a}{b}"),
    (r"\fbox{7}", "7"),
    (r"\boxed 5 done", "5"),
    (r"The solutions are $\boxed{2}$ and $\boxed{3}$.", "2, 3"),
    (r"\boxed{2}, \boxed{3}", "2, 3"),
    (r"\boxed{1} then a long explanation that separates the two boxes clearly \boxed{4}", "4"),
    (r"\boxed{5} \boxed{5}", "5"),
    (r"\boxed{unclosed and then \boxed{3}", "3"),
    (r"\boxed{\boxed{3}}", "3"),  # a box around a box: the inner one's content, not `\boxed{3}, 3`
    (r"\fbox{\boxed{3}}", "3"),
    (r"$\boxed{2}$ and $\boxed{\boxed{3}}$", "2, 3"),
    ("Janet sells 9 eggs.\n#### 18", "18"),
    ("#### 1,000", "1,000"),
    ("The answer is 3.5.", "3.5"),
    ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
    ("So the final answer is 12. I hope it is correct.", "12"),
    ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),
    ("Final Answer: 7", "7"),
    ("**Answer:** 19", "19"),
    ("She makes 9 * 2 = $18 every day\nA: 18", "18"),
    ("The answer is 42 apples.", "42 apples"),
    ("no answer here at all, 42", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_boxed_wins_over_phrases():
    assert extract_answer(r"The answer is 4. Actually \boxed{5}") == "5"


def test_verify_response_statuses():
    assert verify_response("18", "blah\n#### 18") == VerifyResult(True, "18", "ok", "same text", 0.0)
    assert verify_response("18", "no idea").status == "no_answer"
    refused = verify_response("1", r"\boxed{9^{9^{9^{9}}}}")
    assert refused.status == "error" and refused.correct is False and refused.pred == r"9^{9^{9^{9}}}"


@pytest.mark.parametrize(
    "text, status, pred",
    [
        ("\\boxed{" * 140_000, "no_answer", None),  # every box unclosed: the right-to-left walk must stay linear
        ("\\fbox{1} \\boxed{" * 70_000, "ok", "1"),  # the last closed box wins
        ("the answer is " * 70_000, "ok", None),
        ("####" * 250_000, "ok", None),
        ("(" * 1_000_000, "no_answer", None),
        ("\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}", "error", None),  # refused: over 1000 characters
    ],
)
def test_megabyte_responses_are_linear(text, status, pred):
    # How fast is benchmarks/verifier.py's business (hostile-input latency); here: the walk finishes (a quadratic
    # one would not, within the test timeout) and finds what is there.
    result = verify_response("5", text)
    assert result.correct is False and result.status == status, result.reason
    if pred is not None:
        assert result.pred == pred


def test_nested_box_grades_a_right_answer_right():
    for text in (r"\boxed{\boxed{3}}", r"\fbox{\boxed{3}}"):
        result = verify_response("3", text)
        assert result.correct and result.pred == "3", (text, result)
