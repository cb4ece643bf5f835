"""Find the final answer a response commits to, as a string (equivalence is another module's job).

Priority, first found wins: the last `\\boxed{}`/`\\fbox{}` (adjacent boxes joined, so `\\boxed{2} and \\boxed{3}`
gives `2, 3`); the last GSM8K `#### x`; the last answer phrase ("The (final) answer is x", "Final Answer: x",
"Answer: x", a GSM8K-style `A: x` line). No guessing beyond that: a response without any of these has no answer,
which is what a model trained to state its answer should be penalised for.

Every pattern is bounded (no nested quantifiers, a capped capture length) so a 1 MB response costs a linear scan.
"""

from __future__ import annotations

import re

from rayscale.text import _BOX_COMMANDS, boxed_at

MAX_PHRASE_ANSWER = 300  # characters captured after an answer phrase

# Text allowed between two boxes that belong to one answer (`\boxed{2}, \boxed{3}`, `$\boxed{2}$ and $\boxed{3}$`).
_BOX_GAP = re.compile(r"(?:\s|\$|,|;|\\quad|\\text\{\s*(?:and|or)\s*\}|\band\b|\bor\b|\\\)|\\\(){0,40}")
_HASHES = re.compile(rf"####[ \t]*([^\n]{{1,{MAX_PHRASE_ANSWER}}})")
# "The answer is 5." / "the final answer is $x$" / "Final Answer: 5" / "**Answer:** 5" / "A: 18" (line start)
_PHRASE = re.compile(
    r"(?:(?:the\s+)?(?:final\s+)?answer\s*(?:is\s*:?|:)|(?m:^[ \t]*A:))[ \t*]*"
    rf"([^\n]{{1,{MAX_PHRASE_ANSWER}}})",
    re.IGNORECASE,
)
# A sentence ends at a period followed by space/end (not the point of 3.5), or at "I hope it is correct".
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\s+I hope\b", re.IGNORECASE)
_WRAPPERS = re.compile(r"^(?:\*\*|\$\$|\$|\\\(|\\\[)\s*(.*?)\s*(?:\*\*|\$\$|\$|\\\)|\\\])$", re.DOTALL)


def extract_answer(text: str) -> str | None:
    """The final answer stated in `text`, stripped of math delimiters, or None if it states none."""
    if not isinstance(text, str) or not text:
        return None
    for finder in (_boxed_answer, _hash_answer, _phrase_answer):
        answer = finder(text)
        if answer is not None:
            answer = answer.strip()
            if answer:
                return answer
    return None


def _boxed_answer(text: str) -> str | None:
    parts: list[str] = []
    end_limit = len(text)
    scan_limit = len(text)  # braces of a box left of an unclosed one must close before it
    gap_start: int | None = None
    found_at = {cmd: len(text) for cmd in _BOX_COMMANDS}  # each command's last position; searched again only
    while True:                                            # when passed, so the walk is linear overall
        for cmd, at in found_at.items():
            if at >= end_limit:
                found_at[cmd] = text.rfind(cmd, 0, end_limit)
        start = max(found_at.values())
        if start < 0:
            break
        found = boxed_at(text, start, scan_limit)
        if found is None:
            if parts:
                break
            end_limit = scan_limit = start  # an unclosed box: look further left
            continue
        content, end = found
        if gap_start is not None and end > gap_start:  # `\\boxed{\\boxed{3}}`: it encloses the box already
            gap_start = end_limit = start               # taken, whose content is the answer; keep walking left
            continue
        if gap_start is not None:  # a box to the left of one already taken: join only across a separator gap
            gap = text[end:gap_start]
            if _BOX_GAP.fullmatch(gap) is None or len(gap) > 40:
                break
        content = content.strip()
        if not parts or parts[-1] != content:
            parts.append(content)
        gap_start, end_limit = start, start
    if not parts:
        return None
    return ", ".join(reversed(parts))


def _hash_answer(text: str) -> str | None:
    last = None
    for m in _HASHES.finditer(text):
        last = m
    return last.group(1) if last else None


def _phrase_answer(text: str) -> str | None:
    answer = None
    for _ in range(3):  # "Final Answer: The final answer is $5$." nests one phrase in another
        last = None
        for m in _PHRASE.finditer(text if answer is None else answer):
            last = m
        if last is None:
            break
        answer = last.group(1)
    if answer is None:
        return None
    end = _SENTENCE_END.search(answer)
    if end:
        answer = answer[: end.start()]
    answer = answer.strip().rstrip(".").strip()
    while (m := _WRAPPERS.fullmatch(answer)) and m.group(1) != answer:
        answer = m.group(1)
    return answer
