"""Tolerant readers for the teacher's replies.

Models drift from the requested format: tags in other cases or with spaces (`<Incorrect Step>`), missing closing
tags (a reply cut off), `Label: value` lines instead of tags, Markdown bold, code fences, "Step 3:" numbering on
corrected lines, a whole solution repeated instead of the part from step k. Each parser accepts these and returns
None only when the essential part (the step index, the steps) cannot be found at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rayscale.text import last_boxed

_FENCE = re.compile(r"^\s*```[\w-]*\s*$", re.MULTILINE)
_NONE_WORDS = re.compile(r"\b(none|no\s+(?:error|mistake|incorrect)|n/?a|all\s+(?:steps\s+)?(?:are\s+)?correct|null)\b", re.IGNORECASE)
_ORDINALS = {w: i for i, w in enumerate(
    ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh", "twelfth"], start=1)}
_LINE_LABEL = re.compile(r"^\s*(?:step\s*\d+\s*[:.)\-–]|\d+\s*[.)]\s|[-*•]\s)\s*", re.IGNORECASE)


def _tag(words: str) -> str:
    """`IncorrectStep` -> a pattern matching `IncorrectStep`, `incorrect step`, `Incorrect_Step`, ..."""
    parts = re.findall(r"[A-Z][a-z]*|[a-z]+", words)
    return r"[\s_-]*".join(parts)


def _clean(text: str) -> str:
    return _FENCE.sub("", text.replace("\r\n", "\n"))


def tag_section(text: str, name: str, stop_tags: tuple[str, ...] = ()) -> str | None:
    """Content of `<name>...</name>`; without the closing tag, up to the next opening stop tag or the end."""
    tag = _tag(name)
    opening = re.search(rf"<\s*{tag}\s*>", text, re.IGNORECASE)
    if not opening:
        return None
    rest = text[opening.end():]
    closing = re.search(rf"<\s*/\s*{tag}\s*>", rest, re.IGNORECASE)
    end = closing.start() if closing else len(rest)
    for stop in stop_tags:
        m = re.search(rf"<\s*{_tag(stop)}\s*>", rest[:end], re.IGNORECASE)
        if m:
            end = m.start()
    return rest[:end].strip()


def label_section(text: str, labels: tuple[str, ...], all_labels: tuple[str, ...]) -> str | None:
    """`Label: value` form: the value and the lines after it up to the next known label line."""
    label_re = "|".join(labels)
    m = re.search(rf"^[\s#>*]*(?:{label_re})\s*\**\s*[:：]\**\s*", text, re.IGNORECASE | re.MULTILINE)
    if not m:
        return None
    rest = text[m.end():]
    nxt = re.search(rf"^[\s#>*]*(?:{'|'.join(all_labels)})\s*\**\s*[:：]", rest, re.IGNORECASE | re.MULTILINE)
    return rest[: nxt.start() if nxt else len(rest)].strip().strip("*").strip()


# "first" in the name of what is asked for ("the first incorrect step is step 3", or the format's own placeholder
# "number of the first incorrect step, or none" echoed back) is not an answer: read without it.
_FIRST_LABEL = re.compile(
    r"\bfirst\s+(?:(?:incorrect|wrong|erroneous|mistaken|faulty|bad)\s+(?:step|line|one)s?|errors?|mistakes?)\b",
    re.IGNORECASE,
)


def parse_step_number(text: str) -> int | None | str:
    """A 1-based step number from `3`, `Step 3`, `step #3: ...`, `the third step`; "none" for no error; None."""
    text = _FIRST_LABEL.sub(" ", text)
    m = re.search(r"-?\d+", text)
    ordinal = re.search(rf"\b({'|'.join(_ORDINALS)})\b", text, re.IGNORECASE)
    if m and (not ordinal or m.start() < ordinal.start()):
        return int(m.group())
    if ordinal:
        return _ORDINALS[ordinal.group(1).lower()]
    if _NONE_WORDS.search(text):
        return "none"
    return None


def clean_lines(text: str) -> list[str]:
    """Solution lines without numbering/bullets/`Step N:` labels, blank lines dropped."""
    lines = []
    for raw in _clean(text).splitlines():
        line = _LINE_LABEL.sub("", raw.strip(), count=1).strip()
        if line and line not in ("...", "…"):
            lines.append(line)
    return lines


# ------------------------------------------------------------------------------------------------ correct
_CORR_LABELS = {
    "step": ("first\\s+incorrect\\s+step", "incorrect\\s+step", "wrong\\s+step", "first\\s+error", "error\\s+step"),
    "explanation": ("explanation", "reason", "why"),
    "correction": ("corrected\\s+solution", "correct\\s+solution", "corrected\\s+steps", "correction"),
}
_ALL_CORR_LABELS = tuple(label for group in _CORR_LABELS.values() for label in group)
_CORR_TAGS = ("IncorrectStep", "Explanation", "Correction")


@dataclass
class ParsedCorrection:
    wrong_step: int | None  # 0-based; None when the teacher says nothing is wrong
    explanation: str
    corrected_lines: list[str]


def _section(text: str, tag: str, labels: tuple[str, ...], all_labels: tuple[str, ...], stops: tuple[str, ...]):
    found = tag_section(text, tag, stops)
    return found if found is not None else label_section(text, labels, all_labels)


def _other_tags(tag: str) -> tuple[str, ...]:
    return tuple(t for t in _CORR_TAGS if t != tag)


def parse_correction(text: str) -> ParsedCorrection | None:
    """(k, explanation, corrected lines) from a correct-task reply; None if no step index can be read."""
    text = _clean(text)
    step_text = _section(text, "IncorrectStep", _CORR_LABELS["step"], _ALL_CORR_LABELS, _other_tags("IncorrectStep"))
    if step_text is None:
        return None
    number = parse_step_number(step_text)
    if number is None:
        return None
    explanation = _section(text, "Explanation", _CORR_LABELS["explanation"], _ALL_CORR_LABELS, _other_tags("Explanation"))
    correction = _section(text, "Correction", _CORR_LABELS["correction"], _ALL_CORR_LABELS, _other_tags("Correction"))
    if number == "none":
        return ParsedCorrection(None, explanation or "", [])
    return ParsedCorrection(int(number) - 1, " ".join((explanation or "").split()), clean_lines(correction or ""))


# ------------------------------------------------------------------------------------------------ localise
_VERDICT = re.compile(
    r"step\s*#?\s*(\d+)\b[^\n]*?[:\-–=]\s*\**\s*"
    r"(not\s+correct|incorrect|wrong|false|error|no|✗|✘|❌|correct|right|true|yes|okay|ok|✓|✔|✅)(?![a-z])",
    re.IGNORECASE,
)
_NEGATIVE = {"not correct", "incorrect", "wrong", "false", "error", "no", "✗", "✘", "❌"}


@dataclass
class ParsedLocalisation:
    step_verdicts: list[bool]
    first_wrong: int | None  # 0-based


def parse_localisation(text: str, num_steps: int) -> ParsedLocalisation | None:
    """Per-step verdicts and the first wrong step (0-based; may be `num_steps` for a missing final step).

    The explicit first-wrong answer wins; without it, the first "incorrect" verdict. Verdicts before the first
    wrong step are True, at it False; a step with no verdict after it is False (unchecked), before it True.
    Returns None when there is neither a first-wrong answer nor any verdict; raises nothing.
    """
    text = _clean(text)
    body = tag_section(text, "Verdicts", ("FirstWrong",)) or text
    verdicts: dict[int, bool] = {}
    for m in _VERDICT.finditer(body):
        idx = int(m.group(1)) - 1
        if 0 <= idx < num_steps and idx not in verdicts:
            verdicts[idx] = " ".join(m.group(2).lower().split()) not in _NEGATIVE
    fw_text = tag_section(text, "FirstWrong", ("Verdicts",))
    if fw_text is None:
        fw_text = label_section(text, ("first\\s+wrong(?:\\s+step)?", "first\\s+incorrect\\s+step", "first\\s+error"),
                                ("first\\s+wrong", "first\\s+incorrect", "first\\s+error", "step\\s*\\d+"))
    number = parse_step_number(fw_text) if fw_text is not None else None
    if isinstance(number, int):
        first_wrong: int | None = number - 1
    elif any(v is False for v in verdicts.values()):
        first_wrong = min(i for i, v in verdicts.items() if not v)
    elif number == "none" or (verdicts and len(verdicts) == num_steps):
        first_wrong = None
    else:
        return None
    if first_wrong is None:
        return ParsedLocalisation([verdicts.get(i, True) for i in range(num_steps)], None)
    step_verdicts = [
        True if i < first_wrong else False if i == first_wrong else verdicts.get(i, False) for i in range(num_steps)
    ]
    return ParsedLocalisation(step_verdicts, first_wrong)


# ------------------------------------------------------------------------------------------------ thought template
_STEP_OPEN = re.compile(r"<\s*step\s*(\d+)\s*>", re.IGNORECASE)
_STEP_END = re.compile(r"<\s*/\s*step\s*\d*\s*>|<\s*step\s*\d+\s*>|<\s*generali[sz]ed\s*>|<\s*answer\s*>", re.IGNORECASE)


@dataclass
class ParsedThoughtTemplate:
    steps: list[str]
    key_notes: list[str | None]
    generalized: str
    answer_text: str | None  # inside <Answer> (or the last \boxed{} anywhere); the caller extracts the answer


def parse_thought_template(text: str) -> ParsedThoughtTemplate | None:
    text = _clean(text)
    steps: list[str] = []
    notes: list[str | None] = []
    for m in _STEP_OPEN.finditer(text):
        rest = text[m.end():]
        end = _STEP_END.search(rest)
        block = rest[: end.start() if end else len(rest)]
        key = tag_section(block, "Key")
        key_open = re.search(r"<\s*key\s*>", block, re.IGNORECASE)
        step_text = block[: key_open.start()] if key_open else block
        key_close = re.search(r"<\s*/\s*key\s*>", block, re.IGNORECASE)
        if key_close:  # text after </Key> still belongs to the step
            step_text += " " + block[key_close.end():]
        step = " ".join(step_text.split())
        if step:
            steps.append(step)
            notes.append(" ".join(key.split()) if key else None)
    if not steps:
        return None
    generalized = tag_section(text, "Generalized", ("Answer",))
    if generalized is None:
        generalized = tag_section(text, "Generalised", ("Answer",))
    answer = tag_section(text, "Answer", ("Generalized", "Generalised"))
    if not answer:
        answer = last_boxed(text)
    return ParsedThoughtTemplate(steps, notes, " ".join((generalized or "").split()), answer or None)
