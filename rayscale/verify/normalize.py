"""Answer-string normalization: presentation removed, meaning kept.

Removed: math delimiters, `\\left`/`\\right`, LaTeX spacing, `\\text{}`/`\\mbox{}` wrappers, trailing units (`10\\text{
cm}^2`, `18 dollars`), degree signs, currency signs, thousands separators (`1,000`, `10{,}000`, `1,\\!000`), a leading
`x \\in`. Kept: everything that changes the value. A percent sign is split off by `split_percent`, never turned
into a factor of 1/100 (`10\\%` matches `10`, not `0.1`).

Built on math-verify's own LaTeX normalizer (latex2sympy2_extended.normalize_latex) with its unit stripping turned
off: that list removes single letters (`2t` would become `2`), so units are handled here, conservatively.
"""

from __future__ import annotations

import re

from latex2sympy2_extended.latex2sympy2 import NormalizationConfig, normalize_latex

# math-verify's normalizer minus `units` (it strips `t`, `h`, `m`, ... from `2t`) and minus boxed extraction.
LATEX_NORMALIZATION = NormalizationConfig(
    basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="none", equations=False
)

_DELIMITERS = re.compile(r"^(?:\$\$|\$|\\\(|\\\[)(.*?)(?:\$\$|\$|\\\)|\\\])$", re.DOTALL)
_DIGIT_GROUPING = re.compile(r"(?<=\d)(?:\{,\}|,\\!|\\,|\\;|\\ )(?=\d)")
_THOUSANDS = re.compile(r"(?<![\d,.])\d{1,3}(?:,\d{3})+(?![\d,])")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|°|\\degree")
_TEXT_COMMAND = re.compile(r"\\(?:text|mbox|textrm|textup|operatorname\*?)\s*\{")
_IN_PREFIX = re.compile(r"^[A-Za-z]\s*\\in\s*")
# Trailing words after a math head: `18 dollars`, `5 square feet`, `3 cm^2`. A word needs 2+ letters (a lone
# letter is a variable) and whitespace before it (`2xy` keeps its `xy`), and may not be a function name.
_UNIT_WORDS = re.compile(r"(?:\s+[A-Za-z]{2,}(?:\^\{?\d\}?)?\.?)+\s*$")
_FUNCTION_WORDS = {"sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "sqrt", "pi", "mod", "gcd", "lcm",
                   "am", "pm"}
_WORDS_ONLY = re.compile(r"[A-Za-z][A-Za-z '\-]*[A-Za-z]")
# Clock times keep their half of the day: `4:30 \text{ p.m.}` -> `4:30 pm` (not stripped like a unit).
_CLOCK = re.compile(r"(\d{1,2}:\d{2})\s*(?:\\text\{\s*)?([aApP])\.?\s*[mM]\.?\s*\}?")
_PERCENT = re.compile(r"\s*(?:\\%|%|\\text\{\s*\\?%\s*\})\s*$")


def normalize(answer: str) -> str:
    """The canonical string form of one final answer (see the module docstring for what is removed)."""
    s = " ".join(answer.split())
    s = _strip_delimiters(s)
    s = _DIGIT_GROUPING.sub("", s).replace("\\lbrace", "\\{").replace("\\rbrace", "\\}")
    s = _CLOCK.sub(lambda m: f"{m.group(1)} {m.group(2).lower()}m", s)
    s = _unwrap_text(s)
    if _WORDS_ONLY.fullmatch(s):  # a text answer ("Tuesday", "no solution"): LaTeX rules would mangle it
        return s
    s = normalize_latex(s, LATEX_NORMALIZATION)
    s = _DEGREES.sub("", s)
    s = _unwrap_text(s)
    s = _strip_unit_words(s)
    s = _THOUSANDS.sub(lambda m: m.group().replace(",", ""), s)
    s = _IN_PREFIX.sub("", s)
    return " ".join(s.split()).rstrip(".").strip()


def split_percent(s: str) -> tuple[str, bool]:
    """(answer without a trailing percent sign, whether it had one)."""
    m = _PERCENT.search(s)
    return (s[: m.start()].strip(), True) if m else (s, False)


def squash(s: str) -> str:
    """Whitespace-free form for exact textual comparison."""
    return "".join(s.split())


def is_text_answer(s: str) -> bool:
    """Words only, 3+ letters (`Tuesday`, `no solution`); shorter letter strings are algebra (`xy`)."""
    return bool(_WORDS_ONLY.fullmatch(s)) and sum(c.isalpha() for c in s) >= 3


def _strip_delimiters(s: str) -> str:
    while (m := _DELIMITERS.fullmatch(s)) and m.group(1) != s:
        s = m.group(1).strip()
    return s.replace("$", "") if s.count("$") % 2 == 0 else s


def _unwrap_text(s: str) -> str:
    """`\\text{X}` alone -> X; trailing after a math head -> dropped (a unit); elsewhere -> X."""
    for _ in range(8):  # bounded: each pass removes one wrapper
        m = _TEXT_COMMAND.search(s)
        if not m:
            return s
        close = _matching_brace(s, m.end() - 1)
        if close is None:
            return s
        inner = s[m.end() : close]
        head, tail = s[: m.start()].strip(), s[close + 1 :].strip()
        tail_is_power = re.fullmatch(r"\^\{?\d\}?", tail) is not None
        if head and (not tail or tail_is_power) and re.search(r"[\d})\]]$", head) and _looks_like_unit(inner):
            s = head
        else:
            s = s[: m.start()] + inner + s[close + 1 :]
    return s


def _looks_like_unit(inner: str) -> bool:
    words = inner.strip().strip(".")
    return bool(words) and re.fullmatch(r"[A-Za-z][A-Za-z .\-/^0-9]*", words) is not None


def _strip_unit_words(s: str) -> str:
    m = _UNIT_WORDS.search(s)
    if not m or m.start() == 0:
        return s
    head = s[: m.start()]
    words = re.findall(r"[A-Za-z]{2,}", m.group())
    if any(w.lower() in _FUNCTION_WORDS for w in words) or not re.search(r"[\d})\]]$", head.strip()):
        return s
    return head.strip()


def _matching_brace(s: str, open_index: int) -> int | None:
    depth = 0
    for j in range(open_index, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return None
