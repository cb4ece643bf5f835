"""Exact arithmetic on untrusted text: a whitelist parser that never calls eval, sympify or any name lookup.

Accepts numbers (integers, decimals, `½`-style vulgar fractions), `+ - * / ^` (also `** × ÷ · − –`, `\\cdot`,
`\\times`, `\\div`), parentheses and braces, `\\frac{a}{b}` (and `\\dfrac`, `\\tfrac`, LaTeX single-token arguments
such as `\\frac12`), `\\left( \\right)` and LaTeX spacing. Everything else raises `NotArithmetic`. Values are
`fractions.Fraction`, so `1/2^{99}` and `1/2^{98}` differ and `123456789` is not `123456790`.

Work is bounded whatever the input: nesting depth, exponent size and the size of every intermediate result are
capped (`TooLarge`), so `9^{9^{9^{9}}}` is refused in microseconds instead of eating the machine.
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_DEPTH = 60  # parentheses/braces/unary chains; math answers and step lines never come close
MAX_RESULT_BITS = 100_000  # numerator or denominator of any intermediate value (~30,000 decimal digits)
MAX_NUMBER_CHARS = 4000  # one literal; below Python's int-from-string guard of 4300 digits


class NotArithmetic(ValueError):
    """The text contains something other than numbers, the whitelisted operators and grouping."""


class TooLarge(ValueError):
    """Evaluating would need numbers or nesting beyond the caps: refused rather than attempted."""


_SPACES = re.compile(r"(?:\s|\\[,;:! ]|~|\\quad|\\qquad)+")
_COMMANDS = {
    "\\cdot": "*",
    "\\times": "*",
    "\\div": "/",
    "\\ast": "*",
}
_FRACS = ("\\frac", "\\dfrac", "\\tfrac")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_VULGAR = {"½": Fraction(1, 2), "⅓": Fraction(1, 3), "⅔": Fraction(2, 3), "¼": Fraction(1, 4), "¾": Fraction(3, 4),
           "⅕": Fraction(1, 5), "⅖": Fraction(2, 5), "⅗": Fraction(3, 5), "⅘": Fraction(4, 5), "⅙": Fraction(1, 6),
           "⅚": Fraction(5, 6), "⅛": Fraction(1, 8), "⅜": Fraction(3, 8), "⅝": Fraction(5, 8), "⅞": Fraction(7, 8)}
_CLOSE = {"(": ")", "{": "}"}


def evaluate(text: str, allow_percent: bool = False) -> Fraction:
    """The exact value of an arithmetic expression, or NotArithmetic / TooLarge / ZeroDivisionError."""
    return _Parser(text, allow_percent).parse()


def try_evaluate(text: str, allow_percent: bool = False) -> Fraction | None:
    """`evaluate`, or None for anything that is not plain arithmetic (or too large, or divides by zero)."""
    try:
        return evaluate(text, allow_percent)
    except (NotArithmetic, TooLarge, ZeroDivisionError):
        return None


def _check_size(x: Fraction) -> Fraction:
    if x.numerator.bit_length() > MAX_RESULT_BITS or x.denominator.bit_length() > MAX_RESULT_BITS:
        raise TooLarge("intermediate result too large")
    return x


class _Parser:
    """Recursive descent over characters (so LaTeX single-token macro arguments like `\\frac12` work)."""

    def __init__(self, text: str, allow_percent: bool):
        self.s = text
        self.i = 0
        self.depth = 0
        self.allow_percent = allow_percent

    # ------------------------------------------------------------------ scanning
    def _skip(self) -> None:
        while True:
            m = _SPACES.match(self.s, self.i)
            if m and m.end() > self.i:
                self.i = m.end()
                continue
            for cmd in ("\\left", "\\right", "\\bigl", "\\bigr", "\\Bigl", "\\Bigr"):
                if self.s.startswith(cmd, self.i) and not self._letter_at(self.i + len(cmd)):
                    self.i += len(cmd)
                    break
            else:
                return

    def _letter_at(self, j: int) -> bool:
        return j < len(self.s) and self.s[j].isalpha()

    def _peek_op(self) -> str | None:
        """The operator at the cursor (normalized to one of + - * / ^), without consuming it."""
        self._skip()
        s, i = self.s, self.i
        if i >= len(s):
            return None
        if s.startswith("**", i):
            return "^"
        c = s[i]
        if c in "+-*/^":
            return c
        if c in "×·":
            return "*"
        if c == "÷":
            return "/"
        if c in "−–":
            return "-"
        for cmd, op in _COMMANDS.items():
            if s.startswith(cmd, i) and not self._letter_at(i + len(cmd)):
                return op
        return None

    def _take_op(self) -> None:
        s, i = self.s, self.i
        if s.startswith("**", i):
            self.i += 2
            return
        for cmd in _COMMANDS:
            if s.startswith(cmd, i) and not self._letter_at(i + len(cmd)):
                self.i += len(cmd)
                return
        self.i += 1

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise TooLarge("nested too deeply")

    # ------------------------------------------------------------------ grammar
    def parse(self) -> Fraction:
        if not self.s.strip():
            raise NotArithmetic("empty")
        value = self._expr()
        self._skip()
        if self.i != len(self.s):
            raise NotArithmetic(f"unexpected {self.s[self.i : self.i + 10]!r}")
        return value

    def _expr(self) -> Fraction:
        value = self._term()
        while (op := self._peek_op()) in ("+", "-"):
            self._take_op()
            rhs = self._term()
            value = _check_size(value + rhs if op == "+" else value - rhs)
        return value

    def _term(self) -> Fraction:
        value = self._unary()
        while True:
            op = self._peek_op()
            if op in ("*", "/"):
                self._take_op()
                rhs = self._unary()
                value = _check_size(value * rhs if op == "*" else value / rhs)
            elif op is None and self._implicit_product_follows():
                value = _check_size(value * self._unary())  # 2(3+4), (2)(3)
            else:
                return value

    def _implicit_product_follows(self) -> bool:
        # Only a parenthesis right after a value: `2 3` and `2\frac{1}{2}` (a mixed number) stay errors.
        return self.i < len(self.s) and self.s[self.i] == "("

    def _unary(self) -> Fraction:
        op = self._peek_op()
        if op in ("+", "-"):
            self._take_op()
            self._enter()
            try:
                value = self._unary()
            finally:
                self.depth -= 1
            return -value if op == "-" else value
        return self._power()

    def _power(self) -> Fraction:
        base = self._postfix(self._atom())
        if self._peek_op() != "^":
            return base
        self._take_op()
        self._enter()
        try:
            exponent = self._unary()  # right-associative: 2^3^2 = 2^9
        finally:
            self.depth -= 1
        return _power(base, exponent)

    def _postfix(self, value: Fraction) -> Fraction:
        self._skip()
        if self.allow_percent:
            for sign in ("\\%", "%"):
                if self.s.startswith(sign, self.i):
                    self.i += len(sign)
                    return value / 100
        return value

    def _atom(self) -> Fraction:
        self._skip()
        s, i = self.s, self.i
        if i >= len(s):
            raise NotArithmetic("expression ends early")
        c = s[i]
        if c in _CLOSE:
            self.i += 1
            self._enter()
            try:
                value = self._expr()
            finally:
                self.depth -= 1
            self._skip()
            if not s.startswith(_CLOSE[c], self.i):
                raise NotArithmetic(f"missing {_CLOSE[c]!r}")
            self.i += 1
            return value
        for cmd in _FRACS:
            if s.startswith(cmd, i) and not self._letter_at(i + len(cmd)):
                self.i += len(cmd)
                num = self._macro_argument()
                den = self._macro_argument()
                return _check_size(num / den)
        if c in _VULGAR:
            self.i += 1
            return _VULGAR[c]
        m = _NUMBER.match(s, i)
        if m:
            if len(m.group()) > MAX_NUMBER_CHARS:
                raise TooLarge("number literal too long")
            self.i = m.end()
            return Fraction(m.group())
        raise NotArithmetic(f"unexpected {s[i : i + 10]!r}")

    def _macro_argument(self) -> Fraction:
        """A LaTeX macro argument: a `{group}` or a single digit (`\\frac12` is 1/2)."""
        self._skip()
        if self.i < len(self.s) and self.s[self.i].isdigit():
            self.i += 1
            return Fraction(int(self.s[self.i - 1]))
        if self.i < len(self.s) and self.s[self.i] == "{":
            return self._atom()
        raise NotArithmetic("\\frac needs two arguments")


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise NotArithmetic("non-integer exponent")  # roots are not rational in general: sympy's job
    e = exponent.numerator
    if base == 0 or abs(base) == 1:
        return base**e  # cheap whatever e is (0 to a negative power raises ZeroDivisionError)
    bits = max(base.numerator.bit_length(), base.denominator.bit_length())
    if abs(e) * max(bits - 1, 1) > MAX_RESULT_BITS:
        raise TooLarge("power too large")
    return _check_size(base**e)
