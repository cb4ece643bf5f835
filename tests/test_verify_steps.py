"""Step checking: arithmetic claims in synthetic steps, GSM8K annotations and LaTeX; never eval."""

from __future__ import annotations

import json

import pytest

from rayscale.config import SyntheticTaskConfig
from rayscale.data.synthetic import synthetic_splits
from rayscale.text import split_steps
from rayscale.verify import check_step, first_wrong_step
from rayscale.verify.arith import NotArithmetic, TooLarge, evaluate

STEPS = [
    # synthetic task lines
    ("7*3=21", True),
    ("7*3=22", False),
    ("26-4=22", True),
    ("5+21=27", False),
    ("-3*4=-12", True),
    ("2^10=1024", True),
    # GSM8K annotations, and the visible text around them
    ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.", True),
    ("She makes 9 * 2 = $<<9*2=17>>17 every day", False),
    ("It takes 2/2=<<2/2=1>>1 bolt", True),
    ("The total is $0.25 + $0.10 + $0.70 = $<<0.25+0.10+0.70=1.0499999999999998>>1.05", True),  # float printout
    ("She makes 13 * 2 = $<<13*2=26>>27", False),  # the visible number contradicts the claim
    ("1,000 + 2,500 = <<1000+2500=3500>>3,500 dollars", True),
    # LaTeX
    (r"$3 \times 4 = 12$", True),
    (r"$3 \times 4 = 13$", False),
    (r"\(\frac{1}{2} + \frac{1}{3} = \frac{5}{6}\)", True),
    (r"$2 \cdot 3 \cdot 7 = 42$", True),
    (r"$\left(2+3\right)^2 = 25$", True),
    # decimals state their own precision; quotients may be rounded to whole counts, sums may not
    ("10/3 = 3.33", True),
    ("10/3 = 3.4", False),
    ("11 / 5 = 2 trays", True),
    ("$126 + $6.3 = $132", False),
    ("100-60 = 40% of the groceries", True),
    ("10% = 0.1", True),
    # chains
    ("2 + 3 = 5 = 10/2", True),
    ("2 + 3 = 5 = 11/2", False),
    ("3/2 = 1.50 + 3.00 = 4.50", True),  # a running total, not a claim that 3/2 = 4.5
    ("5 / 0 = 3", False),
    # prose around numbers is not a claim
    ("Half of 10 = 5", None),
    ("20% of 50 = 10", None),
    ("x + 3 = 7", None),
    ("2x + 3 = 7", None),
    ("a_1 = 3", None),
    ("so 3 = 3x", None),
    ("15 pages x 1/3 = 5 pages", None),
    ("There are 5 apples.", None),
    ("", None),
    # hostile
    ("__import__('os').system('touch SENTINEL') = 0", None),
    ("().__class__.__bases__[0] = 1", None),
    ("9^{9^{9^{9}}} = 1", None),
    ("9^9^9^9 = 1", None),
]


@pytest.mark.parametrize(("step", "expected"), STEPS)
def test_check_step(step, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_step(step) is expected
    assert not (tmp_path / "SENTINEL").exists()


def test_first_wrong_step():
    assert first_wrong_step(["7*3=21", "5+21=26", "26-4=22", r"\boxed{22}"]) is None
    assert first_wrong_step(["7*3=21", "5+21=27", "27-4=23", r"\boxed{23}"]) == 1
    assert first_wrong_step(["We start.", "7*3=20"]) == 1
    assert first_wrong_step([]) is None


def test_synthetic_gold_steps_all_hold_and_a_corrupted_one_is_found():
    problems = synthetic_splits(SyntheticTaskConfig(train_size=50, test_size=50))["test"]
    for p in problems:
        steps = list(p.gold_steps)
        assert all(check_step(s) is True for s in steps), steps
        lhs, rhs = steps[-1].split("=")
        corrupted = [*steps[:-1], f"{lhs}={int(rhs) + 1}"]
        assert first_wrong_step(corrupted) == len(steps) - 1


def test_gsm8k_gold_solutions_have_no_false_steps_but_two_known_gold_errors(shared_data):
    """6,138 gold steps: every claim holds except two that are literally false in the dataset itself."""
    known_false = {
        "3/4 of a skein of yarn * 364 yards = 364 / 4 = <<3/4*364=273>>273 yards.",  # 364/4 is 91
        "So, Suzzane has $32 - $20 = $300 left.",  # 32 - 20 is 12
    }
    counts = {True: 0, False: 0, None: 0}
    for line in (shared_data / "gsm8k_test.jsonl").read_text().splitlines():
        for step in split_steps(json.loads(line)["answer"])[:-1]:
            verdict = check_step(step)
            counts[verdict] += 1
            if verdict is False:
                assert step in known_false
    assert counts[False] == 2 and counts[True] > 4000


def test_arith_is_a_whitelist():
    assert evaluate(r"\frac{1}{2^{99}}") != evaluate(r"\frac{1}{2^{98}}")
    assert evaluate("2^3^2") == 512 and evaluate("-2^2") == -4 and evaluate("2(3+4)") == 14
    for text in ("x+1", "__import__('os')", "abs(-1)", "1 000", "2\\frac{1}{2}", "[1]", "1;2"):
        with pytest.raises(NotArithmetic):
            evaluate(text)
    for text in ("9^{9^{9^{9}}}", "2^(10^100)", "(" * 10_000 + "1" + ")" * 10_000, "9" * 5000):
        with pytest.raises(TooLarge):  # refused up front, never computed
            evaluate(text)


def test_megabyte_steps_are_decided_or_refused():
    # Speed is benchmarks/verifier.py's business; here: each finishes with the right verdict (None: not checked).
    steps = ("<<1+1=2>>" * 110_000, "(" * 500_000 + "1=1", "1+" * 400_000 + "1=2", "1=2 " * 250_000)
    assert [check_step(step) for step in steps] == [True, None, None, None]
