"""Is a predicted final answer equivalent to the gold one? Stricter than math-verify where math-verify is loose.

Order of checks (first decisive one wins):
1. same text after normalization (normalize.py);
2. multiple choice: a gold that is a single letter `A`-`J` (`(B)`, `\\text{(C)}`) matches only that letter;
3. a trailing percent sign is dropped from both sides: `10\\%` matches `10`, never `0.1`;
4. outer shape (structure.py): unordered lists/sets, ordered tuples, intervals with their open/closed ends, unions;
5. per element: an assignment `x = 3` compares its right side (two assignments also compare variables); word
   answers compare case-insensitively; plain numbers compare as exact rationals (`fractions.Fraction`, mixed
   numbers `2\\frac{1}{2}` included); an answer that is a plain-arithmetic equality chain (`12+24 = 36`) states its
   last side; against a plain-number gold, a calculation (`8-13`, `4*7`) is wrong, not evaluated, since rewarding
   it would teach a model to restate the question; everything else goes to sympy through math-verify's LaTeX parser, with
   decimals turned into exact fractions first (so no float rounding anywhere) and constant expressions compared
   to 30 significant digits at 50-digit precision instead of math-verify's 6-decimal rounding.

Pure and in-process: no timeout here (callers that need one use rayscale.verify.isolation). Inputs that would make
sympy explode (huge exponents or factorials, deep nesting, very long answers) are refused up front with
`status="error"`; anything else that goes wrong also comes back as `status="error"`, never as an exception.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import math_verify
import sympy
from latex2sympy2_extended.latex2sympy2 import latex2sympy
from math_verify.grader import should_treat_as_complex

from rayscale.verify import arith
from rayscale.verify.normalize import is_text_answer, normalize, split_percent, squash
from rayscale.verify.structure import Shape, shape_of

MAX_ANSWER_CHARS = 1000  # a final answer longer than this is refused, not parsed
MAX_NESTING = 40  # bracket depth handed to sympy
MAX_EXPONENT = 10_000  # |n| in x^n, n! handed to sympy


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str
    status: str = "ok"  # "ok" when decided; "error" when the verifier refused or failed (then correct is False)


class Refused(ValueError):
    """An answer the verifier will not hand to sympy (too long, too deep, numbers too large)."""


def is_equivalent(gold: str, pred: str) -> Verdict:
    """Whether `pred` is mathematically the same final answer as `gold` (both answer strings, not responses)."""
    try:
        return _compare_answers(str(gold), str(pred))
    except (Refused, arith.TooLarge) as e:
        return Verdict(False, f"refused: {e}", "error")
    except RecursionError:
        return Verdict(False, "refused: nested too deeply", "error")
    except Exception as e:  # noqa: BLE001 - a bug or a sympy corner case must not take the caller down
        return Verdict(False, f"error: {type(e).__name__}: {str(e)[:200]}", "error")


# ------------------------------------------------------------------------------------------------- top level
def _compare_answers(gold: str, pred: str) -> Verdict:
    for name, s in (("gold", gold), ("answer", pred)):
        if len(s) > MAX_ANSWER_CHARS:
            raise Refused(f"{name} longer than {MAX_ANSWER_CHARS} characters")
    g, p = normalize(gold), normalize(pred)
    if not g:
        return Verdict(False, "empty gold answer", "error")
    if not p:
        return Verdict(False, "empty answer")
    if squash(g) == squash(p):
        return Verdict(True, "same text")
    letter = choice_letter(g)
    if letter is not None:
        return Verdict(choice_letter(p, loose=True) == letter, "choice letter")
    (g, _), (p, _) = split_percent(g), split_percent(p)
    return _compare_shapes(shape_of(g), shape_of(p))


_CHOICE = re.compile(r"\(?([A-J])\)?")
_CHOICE_RESTATED = re.compile(r"(?:\(([A-J])\)|([A-J])[.:)])\s.*", re.DOTALL)  # `(B) 42`, `B. 42`, `B: 42`


def choice_letter(s: str, loose: bool = False) -> str | None:
    """`B` for `B`, `(B)`; with loose=True also for `(B) 42`, `B. 42` (a prediction may restate the option)."""
    s = s.strip()
    m = _CHOICE.fullmatch(s) or (_CHOICE_RESTATED.fullmatch(s) if loose else None)
    return next((g for g in m.groups() if g), None) if m else None


# ------------------------------------------------------------------------------------------------- shapes
def _compare_shapes(g: Shape, p: Shape) -> Verdict:
    if g.kind == "unordered" or p.kind == "unordered":
        gi = g.items if g.kind == "unordered" else (g,)
        pi = p.items if p.kind == "unordered" else (p,)
        return _match_unordered(gi, pi, "unordered list")
    if g.kind == "scalar" and p.kind == "scalar":
        return _compare_scalar(g.text, p.text)
    if g.kind == p.kind == "tuple":
        if len(g.items) != len(p.items):
            return Verdict(False, "tuples of different lengths")
        return _all_equal(zip(g.items, p.items), "ordered tuple")
    if {g.kind, p.kind} <= {"tuple", "interval"}:
        return _compare_intervals(_as_interval(g), _as_interval(p))
    if g.kind == p.kind == "union":
        return _match_unordered(g.items, p.items, "union")
    if "scalar" in (g.kind, p.kind) and _is_relation(g.text or p.text):
        return _mathverify_whole(g, p)  # `1 < x < 2` against `(1, 2)`: a relation and a set
    return Verdict(False, f"different shapes ({g.kind} vs {p.kind})")


def _as_interval(s: Shape) -> Shape | None:
    """A 2-tuple `(a, b)` read as the open interval it also denotes; None if it cannot be one."""
    if s.kind == "interval":
        return s
    return Shape("interval", items=s.items, closed=(False, False)) if len(s.items) == 2 else None


def _compare_intervals(g: Shape | None, p: Shape | None) -> Verdict:
    if g is None or p is None:
        return Verdict(False, "tuple vs interval")
    if g.closed != p.closed:
        return Verdict(False, "interval ends differ (open vs closed)")
    return _all_equal(zip(g.items, p.items), "interval")


def _all_equal(pairs, what: str) -> Verdict:
    for a, b in pairs:
        v = _compare_shapes(a, b)
        if not v.correct:
            return Verdict(False, f"{what}: {v.reason}", v.status)
    return Verdict(True, what)


def _match_unordered(gold: tuple[Shape, ...], pred: tuple[Shape, ...], what: str) -> Verdict:
    """Same elements in any order; duplicates (by text) count once, as in a set of solutions."""
    gold, pred = _dedupe(gold), _dedupe(pred)
    if len(gold) != len(pred):
        return Verdict(False, f"{what}: {len(pred)} elements, expected {len(gold)}")
    unused = list(pred)
    for g in gold:
        for k, p in enumerate(unused):
            if _compare_shapes(g, p).correct:
                del unused[k]
                break
        else:
            return Verdict(False, f"{what}: an expected element is missing")
    return Verdict(True, what)


def _dedupe(items: tuple[Shape, ...]) -> list[Shape]:
    seen, out = set(), []
    for s in items:
        key = (s.kind, squash(s.text), s.items, s.closed)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


# ------------------------------------------------------------------------------------------------- elements
_ASSIGNMENT = re.compile(r"([A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?)\s*=\s*([^=<>]+)")
_MIXED_NUMBER = re.compile(r"(-?)(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}")
_RELATION = re.compile(r"<|>|\\le|\\ge|\\leq|\\geq|\\neq|\\ne\b|\\lt|\\gt")


def _compare_scalar(g: str, p: str) -> Verdict:
    if squash(g) == squash(p):
        return Verdict(True, "same text")
    p = _chain_result(p)
    if _PLAIN_NUMBER.fullmatch(g) and _is_calculation(p):
        # `8-13` for gold -5 restates the question: rewarding it teaches a model to copy the question
        return Verdict(False, "a calculation, not its result")
    ga, pa = _ASSIGNMENT.fullmatch(g), _ASSIGNMENT.fullmatch(p)
    if ga and pa and ga.group(1) != pa.group(1):
        return Verdict(False, "different variables")
    g = ga.group(2).strip() if ga else g
    p = pa.group(2).strip() if pa else p
    if is_text_answer(g) or is_text_answer(p):
        same = " ".join(g.lower().split()) == " ".join(p.lower().split())
        return Verdict(same, "text answer")
    gv, pv = _rational(g), _rational(p)
    if gv is not None and pv is not None:
        return Verdict(gv == pv, "exact rational")
    return _compare_symbolic(g, p)


_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_CALCULATION = re.compile(r"[+*×·]|\\times|\\cdot|(?<=[\d)}])\s*-")  # `-5` is a number, `8-13` a calculation


def _is_calculation(s: str) -> bool:
    return arith.try_evaluate(s) is not None and bool(_CALCULATION.search(s))


def _chain_result(p: str) -> str:
    """`12+24 = 36` states 36: the last side of an equality chain that is plain arithmetic throughout."""
    if "=" not in p:
        return p
    sides = [x.strip() for x in p.split("=")]
    if all(sides) and all(arith.try_evaluate(x) is not None for x in sides):
        return sides[-1]
    return p


def _rational(s: str) -> Fraction | None:
    """The exact value of a plain-number answer, mixed numbers included; None if it is not one."""
    m = _MIXED_NUMBER.fullmatch(s)
    if m and int(m.group(4)) != 0:
        value = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return -value if m.group(1) else value
    try:
        return arith.evaluate(s)
    except (arith.NotArithmetic, ZeroDivisionError):
        return None  # TooLarge propagates: such a number must not reach sympy either


def _is_relation(s: str) -> bool:
    return bool(_RELATION.search(s))


# ------------------------------------------------------------------------------------------------- sympy
def _compare_symbolic(g: str, p: str) -> Verdict:
    _guard(g)
    _guard(p)
    imaginary = _imaginary(g, p)
    G, P = parse_latex(g, imaginary), parse_latex(p, imaginary)
    if G is None:
        return Verdict(False, "gold answer not parseable", "error")
    if P is None:
        return Verdict(False, "answer not parseable")
    if _is_constant(G) and _is_constant(P):
        return _compare_constants(G, P)
    return Verdict(_mathverify().verify(G, P, timeout_seconds=None), "math-verify (symbolic)")


def _compare_constants(a, b) -> Verdict:
    """Two constant expressions: sympy decides their difference is zero or not when it can (exactly); otherwise
    they are equal iff they agree to 30 significant digits at 50-digit precision.

    math-verify compares constants after rounding to 6 decimals, so 1/2^99 "equals" 1/2^98; a relative tolerance
    of 1e-30 separates any two distinct closed forms a contest answer can take.
    """
    zero = (a - b).is_zero
    if zero is not None:
        return Verdict(bool(zero), "symbolically equal" if zero else "symbolically different")
    av, bv = a.evalf(50), b.evalf(50)
    if not (av.is_finite and bv.is_finite):
        return Verdict(bool(a == b), "non-finite value")
    diff, scale = abs(av - bv), max(abs(av), abs(bv))
    if bool(diff <= scale * sympy.Float("1e-30", 50)):
        return Verdict(True, "numerically equal to 30 digits")
    return Verdict(False, "numerically different")


def _is_constant(e) -> bool:
    return isinstance(e, sympy.Expr) and not isinstance(e, sympy.Tuple) and not e.free_symbols and e.is_number


def _mathverify_whole(g: Shape, p: Shape) -> Verdict:
    gt, pt = _shape_text(g), _shape_text(p)
    imaginary = _imaginary(gt, pt)
    G, P = parse_latex(gt, imaginary), parse_latex(pt, imaginary)
    if G is None or P is None:
        return Verdict(False, "not parseable as relation/set")
    ok = _mathverify().verify(G, P, timeout_seconds=None, allow_set_relation_comp=True)
    return Verdict(ok, "math-verify (relation vs set)")


def _shape_text(s: Shape) -> str:
    if s.kind == "scalar":
        return s.text
    if s.kind == "interval":
        lo, hi = s.items
        return f"{'[' if s.closed[0] else '('}{lo.text}, {hi.text}{']' if s.closed[1] else ')'}"
    inner = ", ".join(_shape_text(i) for i in s.items)
    return {"tuple": f"({inner})", "union": " \\cup ".join(_shape_text(i) for i in s.items)}.get(s.kind, inner)


_DECIMAL = re.compile(r"(?<![\d.])(\d*)\.(\d+)(?![\d.])")
_POWER = re.compile(r"\^\s*(\{|\d+|[A-Za-z])")
_FACTORIAL = re.compile(r"(\d+)\s*!")


def _guard(s: str) -> None:
    """Refuse inputs that make sympy compute astronomically (exponent towers, 10^8 powers, huge factorials)."""
    depth = 0
    for c in s:
        depth += c in "([{"
        depth -= c in ")]}"
        if depth > MAX_NESTING:
            raise Refused("nested too deeply")
    for m in _POWER.finditer(s):
        exponent = _braced(s, m.start(1)) if m.group(1) == "{" else m.group(1)
        try:
            value = arith.evaluate(exponent)
        except (arith.NotArithmetic, ZeroDivisionError):
            continue  # symbolic exponent: sympy keeps it symbolic
        if abs(value) > MAX_EXPONENT:
            raise Refused("exponent too large")
    for m in _FACTORIAL.finditer(s):
        if len(m.group(1)) > 6 or int(m.group(1)) > MAX_EXPONENT:
            raise Refused("factorial too large")


def _braced(s: str, open_index: int) -> str:
    depth = 0
    for j in range(open_index, len(s)):
        depth += s[j] == "{"
        depth -= s[j] == "}"
        if depth == 0:
            return s[open_index + 1 : j]
    return s[open_index + 1 :]


@lru_cache(maxsize=4096)
def parse_latex(s: str, imaginary: bool | None = None):
    r"""One normalized answer -> a sympy object via math-verify's LaTeX parser, or None if it does not parse.

    Decimals become exact fractions first (no Float ever reaches a comparison). `imaginary` says whether `i` is
    the imaginary unit; None decides from this string alone, as math-verify does. Callers comparing two answers
    decide once for both, so `2i` and `i \cdot 2` agree.
    """
    exact = _DECIMAL.sub(lambda m: f"\\frac{{{m.group(1)}{m.group(2)}}}{{1{'0' * len(m.group(2))}}}", s)
    if imaginary is None:
        imaginary = should_treat_as_complex(exact)
    try:
        return latex2sympy(exact, is_real=not imaginary, convert_degrees=False, normalization_config=None)
    except Exception:  # noqa: BLE001 - the ANTLR parser raises many types on malformed LaTeX
        return None


def _imaginary(*texts: str) -> bool:
    return any(should_treat_as_complex(t) or re.search(r"(?<![A-Za-z\\])i(?![A-Za-z])", t) for t in texts)


@lru_cache(maxsize=1)
def _mathverify():
    """math_verify, set up once, with its 'timeout disabled' warning silenced: the timeout is ours (a process)."""

    class _DropTimeoutWarning(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "Timeout is disabled" not in record.getMessage()

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_DropTimeoutWarning())
    return math_verify
