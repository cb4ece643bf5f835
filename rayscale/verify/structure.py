"""The outer shape of an answer, read from its text before any math parsing.

A comma list of solutions (`1, 2`, `\\{1,2\\}`, `\\pm 3`) is unordered; a parenthesised tuple (`(1, 2)`,
`\\langle 1,2 \\rangle`) is ordered; an interval has open/closed ends (`[1, 2)`); a union of intervals is unordered.
`(a, b)` is both an ordered pair and an open interval, so it matches either. The elements themselves are compared
elsewhere (equivalence.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MAX_ITEMS = 64  # a list longer than this is not a final answer; refuse rather than compare n^2 pairs
_MAX_PM = 2  # `a \pm b \pm c` expands to 4 values; more is not a contest answer
_OPEN, _CLOSE = "([{", ")]}"


@dataclass(frozen=True)
class Shape:
    kind: Literal["scalar", "tuple", "interval", "union", "unordered"]
    text: str = ""  # scalar: the element; interval: unused
    items: tuple[Shape, ...] = ()  # tuple / union / unordered: the parts; interval: (low, high) scalars
    closed: tuple[bool, bool] = (False, False)  # interval ends


def shape_of(s: str, depth: int = 0) -> Shape:
    s = s.strip()
    if depth > 3:
        return Shape("scalar", s)
    union = split_top(s, "\\cup")
    if len(union) > 1:
        return Shape("union", items=tuple(shape_of(part, depth + 1) for part in union))
    if s.startswith("\\{") and s.endswith("\\}") and _encloses(s, 1):
        return _unordered(_items(s[2:-2]), depth)
    if s.startswith("\\langle") and s.endswith("\\rangle"):
        inner = s[len("\\langle") : -len("\\rangle")]
        return Shape("tuple", items=tuple(shape_of(e, depth + 1) for e in _items(inner)))
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _encloses(s, 0):
        parts = _items(s[1:-1])
        if len(parts) >= 2:
            if len(parts) == 2 and (s[0], s[-1]) != ("(", ")"):
                low, high = (Shape("scalar", p.strip()) for p in parts)
                return Shape("interval", items=(low, high), closed=(s[0] == "[", s[-1] == "]"))
            return Shape("tuple", items=tuple(shape_of(e, depth + 1) for e in parts))
    parts = _items(s)
    if len(parts) > 1:
        return _unordered(parts, depth)
    pm = s.count("\\pm") + s.count("\\mp")
    if 0 < pm <= _MAX_PM:  # `1 \pm \sqrt 2` is the two values 1 + sqrt 2 and 1 - sqrt 2
        return Shape("unordered", items=tuple(Shape("scalar", v) for v in _expand_pm(s)))
    return Shape("scalar", s)


def _unordered(parts: list[str], depth: int) -> Shape:
    """A list or set; members that are themselves unordered (`\\pm 2` in `1, \\pm 2`) are flattened into it."""
    items: list[Shape] = []
    for part in parts:
        shape = shape_of(part, depth + 1)
        items.extend(shape.items if shape.kind == "unordered" else (shape,))
    return Shape("unordered", items=tuple(items))


def split_top(s: str, sep: str) -> list[str]:
    """`s` split at each `sep` outside any brackets (bracket kinds are not matched: `[1, 2)` is one group)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i].strip())
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(s[start:].strip())
    return parts


def _items(inner: str) -> list[str]:
    parts = split_top(inner, ",")
    if len(parts) > MAX_ITEMS:
        raise ValueError(f"more than {MAX_ITEMS} items in one answer")
    return parts


def _encloses(s: str, open_index: int) -> bool:
    """Whether the bracket at `open_index` closes at the very end of `s` (and not before)."""
    depth = 0
    for j in range(open_index, len(s)):
        if s[j] in _OPEN:
            depth += 1
        elif s[j] in _CLOSE:
            depth -= 1
            if depth == 0:
                return j == len(s) - 1
    return False


def _expand_pm(s: str) -> list[str]:
    """`1 \\pm \\sqrt 2` -> [`1 + \\sqrt 2`, `1 - \\sqrt 2`]; `\\mp` gives the opposite order (same set)."""
    for cmd, first, second in (("\\pm", "+", "-"), ("\\mp", "-", "+")):
        i = s.find(cmd)
        if i >= 0 and not s[i + len(cmd) : i + len(cmd) + 1].isalpha():
            head, tail = s[:i], s[i + len(cmd) :]
            return [v for sign in (first, second) for v in _expand_pm(head + sign + tail)]
    return [s]
