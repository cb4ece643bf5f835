"""Answer equivalence: the original MATH is_equiv cases, a table of tricky pairs, and refusals of hostile answers."""

from __future__ import annotations

import json

import pytest

from rayscale.verify import Verdict, is_equivalent
from rayscale.verify.normalize import normalize, split_percent

# Where the issue's rules deliberately differ from hendrycks' string-based is_equiv: a comma list of solutions is
# unordered here ("comma lists of solutions are unordered"); its unit tests only pinned down that its string
# normalizer does not reorder.
HENDRYCKS_DEPARTURES = {"test_order": True, "test_decimals": True}


def _hendrycks_cases(shared_data):
    path = shared_data / "hendrycks_is_equiv_test_cases.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_hendrycks_is_equiv_cases(shared_data):
    cases = _hendrycks_cases(shared_data)
    assert len(cases) == 16
    for case in cases:
        expected = HENDRYCKS_DEPARTURES.get(case["test"], bool(case["expected"]))
        verdict = is_equivalent(case["a"], case["b"])
        assert verdict.correct is expected, (case, verdict)
        assert is_equivalent(case["b"], case["a"]).correct is expected, case


# (gold, pred, expected). Grouped by the rule they pin down; many are where math-verify 0.9 is loose.
TRICKY = [
    # a calculation is not its result: rewarding `8-13` for -5 teaches a model to restate the question
    ("-5", "8-13", False),
    ("28", "4*7", False),
    ("10", r"2\times 5", False),
    ("-5", "-5", True),
    # a plain-arithmetic equality chain states its last side
    ("36", "12+24 = 36", True),
    ("36", "12+24 = 35", False),
    ("36", "12+24 = 30+6", False),
    # exact rationals: no float rounding
    (r"\frac{1}{2^{99}}", r"\frac{1}{2^{98}}", False),
    (r"\frac{1}{2^{99}}", r"2^{-99}", True),
    ("123456789", "123456790", False),
    ("123456789123456789", "123456789123456788", False),
    (r"\frac{1}{3}", "0.333333", False),
    (r"\frac{1}{3}", "0.3333333333333333", False),
    (r"\frac{3}{4}", "0.75", True),
    ("0.1", ".1", True),
    ("3", "3.000", True),
    ("-4", "-4.0", True),
    (r"\frac{6}{3}", "2", True),
    (r"\dfrac{-1}{2}", r"-\frac{1}{2}", True),
    ("1.5", r"\frac{3}{2}", True),
    (r"\sqrt{2}", "1.414214", False),
    (r"\pi", "3.14159", False),
    (r"2\sqrt{2}", r"\sqrt{8}", True),
    (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}", True),
    (r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{2}}{2}", True),
    (r"\sqrt{2}+10^{-40}", r"\sqrt{2}", False),
    (r"12\frac{3}{5}", r"\frac{63}{5}", True),  # mixed numbers, as MATH writes them
    (r"1\frac{1}{10}", "1.1", True),
    (r"1\frac{1}{10}", r"\frac{1}{10}", False),
    # thousands separators, currency, units, text wrappers
    ("1000000", "1,000,000", True),
    (r"10{,}000", "10000", True),
    (r"1,\!000", "1000", True),
    (r"11,\! 111,\! 111,\! 100", "11111111100", True),
    (r"\$32,\!348", "32348", True),
    (r"\$10", "10", True),
    ("5", r"5\text{ cm}", True),
    ("5", r"5\text{ cm}^2", True),
    ("18", "18 dollars", True),
    ("18", "19 dollars", False),
    ("2t", "2", False),  # math-verify strips `t` as a unit
    ("2", "2t", False),
    (r"30^\circ", "30", True),
    ("4:30 p.m.", r"4:30 \text{ p.m.}", True),
    ("4:30 p.m.", "4:30pm", True),
    ("4:30 p.m.", r"4:30 \text{ a.m.}", False),
    (r"\text{Tuesday}", "tuesday", True),
    (r"\text{Tuesday}", "Wednesday", False),
    (r"\textbf{even}", "even", True),
    # percent: a percent sign on a percent answer is fine, no silent x100 rescaling
    (r"10\%", "10", True),
    ("10", r"10\%", True),
    (r"10\%", "0.1", False),
    ("0.1", r"10\%", False),
    (r"12.5\%", r"\frac{25}{2}", True),
    # ordered tuples vs unordered lists, intervals
    ("(1,2)", "(2,1)", False),
    ("(1,2)", "(1, 2)", True),
    ("(1,2)", "1,2", False),
    ("(3,-1,2)", r"\left(3, -1, 2\right)", True),
    (r"\langle 1, 2 \rangle", r"\langle 2, 1 \rangle", False),
    ("1,2", "2,1", True),
    ("1, 2, 3", r"\{3, 2, 1\}", True),
    ("1, 2, 3", "1, 2", False),
    ("1, 2", "1, 2, 3", False),
    ("-2, 5", "5 and -2", True),
    ("(1,2), (3,4)", "(3,4), (1,2)", True),
    ("(1,2), (3,4)", "(2,1), (3,4)", False),
    ("[1,2)", "[1,2]", False),
    ("[1,2)", "[1, 2)", True),
    ("(1,2)", "[1,2]", False),
    ("(1,2)", "(1,2]", False),
    (r"(-\infty, 3]", r"(-\infty,3)", False),
    (r"(-\infty, 3]", r"(-\infty, 3]", True),
    (r"(1,2) \cup (3,4)", r"(3,4)\cup(1,2)", True),
    (r"(1,2) \cup (3,4)", r"(1,2)\cup[3,4)", False),
    (r"x \in [1,2]", "[1,2]", True),
    ("1 < x < 2", "(1, 2)", True),
    # plus-minus is two values
    (r"\pm 3", "3", False),
    (r"\pm 3", "3, -3", True),
    (r"\pm 3", r"\pm 3", True),
    (r"1 \pm \sqrt{2}", r"1+\sqrt{2}, 1-\sqrt{2}", True),
    (r"\frac{1 \pm \sqrt{5}}{2}", r"\frac{1+\sqrt5}{2}, \frac{1-\sqrt5}{2}", True),
    (r"\{1\pm\sqrt{5},-2\}", r"-2, 1+\sqrt5, 1-\sqrt5", True),  # MATH500: the pair expands inside the set
    (r"1, \pm 2", "2, 1, -2", True),
    (r"x = \pm 3", "x=3, x=-3", True),
    # assignments and equations
    ("x=3", "3", True),
    ("3", "x = 3", True),
    ("y=3", "x=3", False),
    ("y = 2x + 3", "y=3+2x", True),
    ("5x - 7y + 11z + 4 = 0", "x + y - z + 2 = 0", False),
    # symbolic
    ("x^2+2x+1", "(x+1)^2", True),
    ("x^2+2x+1", "(x-1)^2", False),
    ("x + c", "c + x", True),
    ("x + c", "x", False),
    ("4a-2", "2(2a-1)", True),
    ("2i", r"i \cdot 2", True),
    ("3+4i", "4i+3", True),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}", False),
    # multiple choice
    ("A", "(A)", True),
    (r"\text{(B)}", "B", True),
    (r"\text{(B)}", "(B) 42", True),
    (r"\text{(B)}", "C", False),
    ("C", r"\textbf{(C)}", True),
    ("B", "B. 42", True),
    ("A", "A + B", False),
    (r"2\frac{1}{0}", "3", False),
    # nothing sensible
    ("5", "", False),
    ("5", "five", False),
]


@pytest.mark.parametrize(("gold", "pred", "expected"), TRICKY)
def test_tricky_pairs(gold, pred, expected):
    verdict = is_equivalent(gold, pred)
    assert isinstance(verdict, Verdict)
    assert verdict.correct is expected, verdict
    assert verdict.reason


def test_verdict_status_is_ok_for_decided_pairs():
    assert is_equivalent("2/4", "0.5") == Verdict(True, "exact rational", "ok")
    assert is_equivalent("1", "2").status == "ok"


@pytest.mark.parametrize(
    "hostile, reason",
    [
        ("__import__('os').system('touch SENTINEL')", "not parseable"),
        ("().__class__.__bases__[0]", "not parseable"),
        (r"9^{9^{9^{9}}}", "refused: power too large"),
        (r"(x+1)^{10^{8}}", "refused: exponent too large"),
        ("{" * 10_000 + "1" + "}" * 10_000, "longer than 1000 characters"),
        ("1" * 5000, "longer than 1000 characters"),
        (r"\frac{1}{0}", "symbolically different"),
        ("10000000!", "refused: factorial too large"),
    ],
)
def test_hostile_answers_never_raise_and_are_refused_or_decided(hostile, reason, tmp_path, monkeypatch):
    # Refused up front (nothing computed), never evaluated as Python; latency is benchmarks/verifier.py's business.
    monkeypatch.chdir(tmp_path)
    for gold, pred in ((hostile, "1"), ("1", hostile)):
        verdict = is_equivalent(gold, pred)
        assert verdict.correct is False
        assert verdict.status in ("ok", "error")
        assert reason in verdict.reason, verdict
    assert not (tmp_path / "SENTINEL").exists()


def test_refusals_name_the_reason():
    assert is_equivalent(r"9^{9^{9^{9}}}", "1").reason.startswith("refused")
    assert is_equivalent("1", "x" * 2000).reason == "refused: answer longer than 1000 characters"


def test_normalize_strips_presentation_only():
    assert normalize(r"$\left(1, \dfrac{1}{2}\right)$") == r"(1, \frac{1}{2})"
    assert normalize(r"10\text{ units}") == "10"
    assert normalize(r"\text{no solution}") == "no solution"
    assert normalize("2xy") == "2xy"  # letters glued to a number are algebra, not units
    assert split_percent(r"10\%") == ("10", True)
    assert split_percent("10") == ("10", False)
