"""The one record every data source is converted into."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    gold_answer: str
    gold_solution: str | None = None
    gold_steps: tuple[str, ...] | None = None  # step-by-step gold, one entry per line, when the source has it
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gold_steps"] = list(self.gold_steps) if self.gold_steps is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Problem:
        steps = d.get("gold_steps")
        return cls(
            id=str(d["id"]),
            question=d["question"],
            gold_answer=str(d["gold_answer"]),
            gold_solution=d.get("gold_solution"),
            gold_steps=tuple(steps) if steps is not None else None,
            source=d.get("source", ""),
            meta=dict(d.get("meta") or {}),
        )
