"""Step checking: find the first solution step whose arithmetic claim is false.

A claim is `lhs = rhs` where both sides are plain arithmetic (rayscale.verify.arith: numbers, `+ - * / ^`,
parentheses, `\\frac`, `\\times`, `\\cdot`; never eval or sympify). Claims come from
- GSM8K calculator annotations `<<16-3-4=9>>`;
- arithmetic chains in the text, `7*3=21`, `16 - 3 - 4 = 9 eggs`, `$3 \\times 4 = 12$`, `2 + 3 = 5 = 10/2`.

Chains are read conservatively, because prose wraps them: a side that is only a fragment of something larger
(`x + 3 = 7`, `a_1 = 3`, `= 3x`) is dropped, and so is a bare leading number after a word (`half of 10 = 5` claims
nothing about 10). A decimal side may be rounded or truncated to its own digits (`10/3 = 3.33` holds, `10/3 = 3.3`
holds, `10/3 = 3.4` does not); a quotient may be stated as a neighbouring whole number (`11/5 = 2 trays`), a sum may
not (`126 + 6.3 = 132` is false). Division by zero is a false claim; anything too large to evaluate is no claim.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction
from itertools import pairwise

from rayscale.verify import arith

_ANNOTATION = re.compile(r"<<([^<>]{1,500})>>")
_DELIMITERS = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$|\\\$")
_THOUSANDS = re.compile(r"(?<![\d,.])\d{1,3}(?:,\d{3})+(?![\d,])")
# `32 x (30/60)`, `2000x 10`: an x with a space on at least one side, between a number and a number/bracket.
_TIMES_X = re.compile(r"(?<=[\d)])(?: +[xX×] *| *[xX×] +)(?=[\d(.])")
# A maximal run of arithmetic tokens (numbers, operators, grouping, `=`, whitelisted LaTeX commands).
_RUN = re.compile(
    r"(?:\d+(?:\.\d+)?|\.\d+|[-+*/^=()%{}×÷·−–\s½⅓⅔¼¾⅕⅖⅗⅘⅙⅚⅛⅜⅝⅞]"
    r"|\\(?:frac|dfrac|tfrac|cdot|times|div|left|right|[,;!%]))+"
)
_BINARY_START = re.compile(r"[+*/^×÷·]|\\(?:cdot|times|div)|-\s")
_OPERATOR = re.compile(r"[-+*/^×÷·−–%]|\\(?:frac|dfrac|tfrac|cdot|times|div)")
# Prose that makes the following numbers the right operand of something outside the run: `15 pages x 1/3 = 5`.
_CONNECTIVE = re.compile(r"(?:\b(?:x|X|times|of|by|per|plus|minus|and)|[×*/+\-–])\s*$")
_WORD_BEFORE = re.compile(r"[A-Za-z][.,:;]?\s*$")
_DECIMAL_LITERAL = re.compile(r"-?\d*\.(\d+)")
_INTEGER_LITERAL = re.compile(r"-?\d+")
_MAX_SIDE_CHARS = 1000  # one side of a claim; longer is not a step someone wrote
MAX_CLAIMS = 256  # claims checked per step; a line with more is not a solution step


def check_step(step: str) -> bool | None:
    """False if any arithmetic claim in the step is false, True if it has claims and all hold, None if none."""
    verdicts = [_check_claim(lhs, rhs) for lhs, rhs in claims_in(step)[:MAX_CLAIMS]]
    verdicts = [v for v in verdicts if v is not None]
    if not verdicts:
        return None
    return all(verdicts)


def first_wrong_step(steps: Sequence[str]) -> int | None:
    """0-based index of the first step with a false arithmetic claim; None if no step is checkably false."""
    for i, step in enumerate(steps):
        if check_step(step) is False:
            return i
    return None


def claims_in(step: str) -> list[tuple[str, str]]:
    """The (lhs, rhs) pairs a step asserts: its calculator annotations, then the chains in its visible text."""
    claims: list[tuple[str, str]] = []
    for m in _ANNOTATION.finditer(step):
        parts = m.group(1).split("=")
        claims.extend(pairwise(p for p in parts if len(p) <= _MAX_SIDE_CHARS))
    visible = _ANNOTATION.sub(" ", step)
    visible = _DELIMITERS.sub(" ", visible)
    visible = _THOUSANDS.sub(lambda m: m.group().replace(",", ""), visible)
    visible = _TIMES_X.sub(" * ", visible)
    for m in _RUN.finditer(visible):
        if "=" in m.group():
            claims.extend(_chain_claims(visible, m.start(), m.end()))
    return claims


def _chain_claims(text: str, start: int, end: int) -> list[tuple[str, str]]:
    parts = text[start:end].split("=")
    run = text[start:end]
    # Glued: no space between the run and the letter/bracket next to it (`x2 + 1`, `= 3x`).
    glued_before = start > 0 and not run[0].isspace() and (text[start - 1].isalnum() or text[start - 1] in "_}])'\\")
    glued_after = end < len(text) and not run[-1].isspace() and (text[end].isalnum() or text[end] in "_{[\\")
    prose = text[max(0, start - 40) : start]
    word_before = _WORD_BEFORE.search(prose) is not None

    first = parts[0].strip()
    fragment = _BINARY_START.match(first) or glued_before or _CONNECTIVE.search(prose)
    if fragment or (not _OPERATOR.search(first) and word_before):
        parts[0] = ""  # a fragment of a longer expression or phrase
    last = parts[-1].strip()
    if re.search(r"([-+*/^×÷·]|\\(?:cdot|times|div|frac))$", last) or glued_after:
        parts[-1] = ""

    claims: list[tuple[str, str]] = []
    chain: list[str] = []
    for part in [*parts, ""]:  # an empty part (fragment, `==`, too long to be a step) ends a chain
        part = _balance(part.strip()) if len(part) <= _MAX_SIDE_CHARS else ""
        if part:
            chain.append(part)
            continue
        if len(chain) >= 2 and any(_OPERATOR.search(p) for p in chain):
            claims.extend(pairwise(chain))
        chain = []
    return claims


def _balance(part: str) -> str:
    """Drop the unmatched bracket a sentence put around a chain: `(5 + 3 = 8)`."""
    while part.startswith("(") and part.count("(") > part.count(")"):
        part = part[1:].strip()
    while part.endswith(")") and part.count(")") > part.count("("):
        part = part[:-1].strip()
    return part


def _check_claim(lhs: str, rhs: str) -> bool | None:
    """Whether lhs = rhs holds. Conservative where prose is ambiguous: `40%` may be 40 or 0.4 (`100-60 = 40%`,
    `10% = 0.1`), and a running total `3/2 = 1.50 + 3.00` (meaning 3/2 = 1.50, then 1.50 + 3.00 = ...) holds."""
    readings = []
    for allow_percent in (True, False):
        try:
            readings.append((arith.evaluate(_unpercent(lhs, allow_percent), True),
                             arith.evaluate(_unpercent(rhs, allow_percent), True)))
        except ZeroDivisionError:
            return False
        except (arith.NotArithmetic, arith.TooLarge):
            continue
    if not readings:
        return None
    for left, right in readings:
        if left == right or _approximates(lhs, left, right) or _approximates(rhs, right, left):
            return True
        if _whole_quotient(lhs, rhs, left, right):
            return True
    return _running_total(lhs, rhs)


def _unpercent(side: str, keep: bool) -> str:
    return side if keep else side.replace("\\%", " ").replace("%", " ")


_LEADING_TERM = re.compile(r"\s*(-?[\d.]+%?)\s*[-+–]")


def _running_total(lhs: str, rhs: str) -> bool:
    """`a = b + c` read as `a = b`, then `b + c` continuing: true when a equals b."""
    m = _LEADING_TERM.match(rhs)
    if not m:
        return False
    try:
        return arith.evaluate(lhs, True) == arith.evaluate(m.group(1), True)
    except (arith.NotArithmetic, arith.TooLarge, ZeroDivisionError):
        return False


def _approximates(text: str, stated: Fraction, exact: Fraction) -> bool:
    """Whether `text`, if it is a decimal literal, is `exact` rounded or truncated to its own digits.

    `10/3 = 3.33` and `= 3.3` hold, `= 3.4` does not. A long decimal is a float printout (GSM8K's calculator writes
    `1.0499999999999998` for 0.25+0.10+0.70), so it also gets float precision, relative 1e-12.
    """
    m = _DECIMAL_LITERAL.fullmatch(text.strip())
    if not m:
        return False
    unit = Fraction(1, 10 ** len(m.group(1)))
    error = abs(exact - stated)
    rounded = error <= unit / 2
    truncated = abs(stated) <= abs(exact) and error <= unit
    return rounded or truncated or error <= abs(exact) * Fraction(1, 10**12)


def _whole_quotient(lhs: str, rhs: str, left: Fraction, right: Fraction) -> bool:
    """`11/5 = 2 trays`: a quotient stated as a whole number, rounded either way (counts of things)."""
    divides = any(op in lhs for op in ("/", "÷", "\\frac", "\\div"))
    return divides and _INTEGER_LITERAL.fullmatch(rhs.strip()) is not None and abs(left - right) < 1
