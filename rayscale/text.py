"""Small text helpers shared by data loading, prompts and answer checking (no heavy imports)."""

from __future__ import annotations

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (braces balanced), or None.

    Also accepts the brace-less `\\boxed 5` form some models emit.
    """
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    found = boxed_at(text, start)
    return found[0] if found else None


def boxed_at(text: str, start: int, stop: int | None = None) -> tuple[str, int] | None:
    """(content, end index) of the box command starting at `start`; None if its braces do not close before `stop`.

    Linear in the scanned length whatever the nesting. A caller walking boxes right to left passes the start of an
    unclosed box as `stop`: a box to its left that has not closed by then never closes, so the walk stays linear
    even on a megabyte of `\\boxed{`.
    """
    stop = len(text) if stop is None else stop
    i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] != "{":
        end = i
        while end < len(text) and not text[end].isspace() and text[end] not in "$":
            end += 1
        return (text[i:end], end) if end > i else None
    depth = 0
    for j in range(i, stop):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j], j + 1
    return None  # unbalanced: no answer rather than a guess


def split_steps(solution: str) -> list[str]:
    """A solution's steps: its non-empty lines, stripped. The prompts ask for one step per line."""
    return [line.strip() for line in solution.splitlines() if line.strip()]


def step_starts(response: str) -> list[int]:
    """Character offset where each step (non-empty line) of `response` starts, in order."""
    starts, offset = [], 0
    for line in response.splitlines(keepends=True):
        if line.strip():
            starts.append(offset + len(line) - len(line.lstrip()))
        offset += len(line)
    return starts


def split_at_step(response: str, k: int) -> tuple[str, str]:
    """(text before step k, text from step k on), cut exactly so prefix + rest == response.

    k == number of steps gives (response, ""); the prefix keeps its trailing newline so a continuation written
    as fresh lines follows it directly.
    """
    starts = step_starts(response)
    if not 0 <= k <= len(starts):
        raise IndexError(f"step {k} out of range for a response with {len(starts)} steps")
    cut = starts[k] if k < len(starts) else len(response)
    return response[:cut], response[cut:]
