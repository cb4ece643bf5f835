"""Teacher prompts from editable template files (`rayscale/teacher/templates/<task>.md`).

A template file has a `=== system ===` section (optional) and a `=== user ===` section; `{{name}}` placeholders are
filled per problem. Unknown placeholders and missing required ones are configuration errors naming the file, so
an edited template fails when the teacher starts, not as silently worse prompts. `teacher.prompts_dir` may hold
any subset of the files; the packaged ones fill in the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from rayscale.data.problem import Problem
from rayscale.errors import ConfigError
from rayscale.prompts import PromptStyle, answer_line

Messages = list[dict[str, str]]

# task -> (required placeholders, optional placeholders)
TASKS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "thought_template": (frozenset({"question"}), frozenset({"reference", "answer_format"})),
    "localise": (frozenset({"question", "student_steps"}), frozenset({"num_steps", "reference", "answer_format"})),
    "correct": (frozenset({"question", "student_steps"}), frozenset({"num_steps", "reference", "answer_format"})),
}
_SECTION = re.compile(r"^===\s*(system|user)\s*===\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class PromptTemplate:
    task: str
    system: str | None
    user: str
    source: str  # file it came from, for error messages

    def render(self, values: dict[str, str]) -> Messages:
        messages = [{"role": "system", "content": _fill(self.system, values)}] if self.system else []
        return messages + [{"role": "user", "content": _fill(self.user, values)}]


def _fill(text: str, values: dict[str, str]) -> str:
    # One pass, so a value that happens to contain "{{x}}" (a student's text) is never expanded.
    filled = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), text)
    return re.sub(r"\n{3,}", "\n\n", filled).strip()  # an empty optional block leaves no hole


def parse_template(task: str, text: str, source: str) -> PromptTemplate:
    if task not in TASKS:
        raise ConfigError(f"unknown teacher task {task!r}; expected one of {', '.join(TASKS)}")
    pieces = _SECTION.split(text)
    if pieces[0].strip():
        raise ConfigError(f"{source}: text before the first '=== system ===' or '=== user ===' line")
    sections: dict[str, str] = {}
    for name, body in zip(pieces[1::2], pieces[2::2]):
        if name in sections:
            raise ConfigError(f"{source}: section '=== {name} ===' appears twice")
        sections[name] = body.strip()
    if not sections.get("user"):
        raise ConfigError(f"{source}: missing or empty '=== user ===' section")
    required, optional = TASKS[task]
    used = set(_PLACEHOLDER.findall(sections["user"] + sections.get("system", "")))
    unknown = used - required - optional
    if unknown:
        raise ConfigError(
            f"{source}: unknown placeholder(s) {', '.join('{{' + u + '}}' for u in sorted(unknown))}; "
            f"{task} templates may use {', '.join('{{' + p + '}}' for p in sorted(required | optional))}"
        )
    missing = required - used
    if missing:
        raise ConfigError(f"{source}: required placeholder(s) missing: {', '.join('{{' + m + '}}' for m in sorted(missing))}")
    return PromptTemplate(task, sections.get("system") or None, sections["user"], source)


def load_templates(prompts_dir: str | Path | None = None) -> dict[str, PromptTemplate]:
    """Every task's template: `prompts_dir/<task>.md` where present, else the packaged file."""
    if prompts_dir is not None and not Path(prompts_dir).is_dir():
        raise ConfigError(f"teacher.prompts_dir: {prompts_dir} is not a directory")
    out = {}
    for task in TASKS:
        override = Path(prompts_dir) / f"{task}.md" if prompts_dir is not None else None
        if override is not None and override.is_file():
            out[task] = parse_template(task, override.read_text(encoding="utf-8"), str(override))
        else:
            packaged = resources.files("rayscale.teacher").joinpath(f"templates/{task}.md")
            out[task] = parse_template(task, packaged.read_text(encoding="utf-8"), f"rayscale/teacher/templates/{task}.md")
    return out


def numbered_steps(lines: list[str]) -> str:
    return "\n".join(f"Step {i}: {line}" for i, line in enumerate(lines, start=1))


def prompt_values(problem: Problem, lines: list[str] | None, style: PromptStyle) -> dict[str, str]:
    values = {
        "question": problem.question,
        "reference": f"For checking only (do not mention it): the correct final answer is {problem.gold_answer}.",
        "answer_format": answer_line("<final answer>", style),
    }
    if lines is not None:
        values |= {"student_steps": numbered_steps(lines), "num_steps": str(len(lines))}
    return values
