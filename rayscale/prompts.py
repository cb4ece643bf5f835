"""Prompt templates in one place: how a question is asked and how a step-by-step answer is laid out.

Solutions are one step per line; the last line states the final answer. The `bare` style (question only) suits the
tiny character-level model; `boxed` and `answer_is` add an instruction for real instruction-tuned models.
"""

from __future__ import annotations

from typing import Literal

PromptStyle = Literal["bare", "boxed", "answer_is"]

INSTRUCTIONS: dict[str, str | None] = {
    "bare": None,
    "boxed": "Solve the problem step by step, one step per line. Put the final answer in \\boxed{}.",
    "answer_is": 'Solve the problem step by step, one step per line. End with "The answer is X."',
}


def answer_line(answer: str, style: PromptStyle = "bare") -> str:
    return f"The answer is {answer}." if style == "answer_is" else f"\\boxed{{{answer}}}"


def format_solution(steps: list[str] | tuple[str, ...], answer: str, style: PromptStyle = "bare") -> str:
    """The target layout of a worked solution: steps, then the answer line."""
    return "\n".join([*steps, answer_line(answer, style)])


def build_messages(question: str, style: PromptStyle = "bare") -> list[dict[str, str]]:
    instruction = INSTRUCTIONS[style]
    content = question if instruction is None else f"{question}\n\n{instruction}"
    return [{"role": "user", "content": content}]


def render_prompt(tokenizer, question: str, style: PromptStyle = "bare", use_chat_template: bool = True) -> str:
    """The prompt text a rollout worker continues; the assistant's answer starts right after it."""
    messages = build_messages(question, style)
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return messages[0]["content"] + "\n"
