"""weak_to_strong's weak supervisor: whose answer a sample's majority vote is weighed against.

Either a fixed file (JSONL rows {"id", "answer"}, read when the run starts, so a bad file fails before anything
runs) or a second, smaller model (`algo.weak_to_strong.weak_model`) answering greedily from its own rollout worker,
started on first use in the weak_rollout role's placement and stopped with the run.
"""

from __future__ import annotations

from collections.abc import Callable

from rayscale.actors.rollout import RolloutManager
from rayscale.config import WeakToStrongConfig
from rayscale.data import Problem
from rayscale.data.loaders import iter_jsonl
from rayscale.types import RolloutRequest
from rayscale.verify import extract_answer


class WeakSupervisor:
    def __init__(self, w2s: WeakToStrongConfig, start_rollout: Callable[[str], RolloutManager]):
        """`start_rollout(model_path)`: one rollout worker for the weak model, in its role's placement."""
        self.model = w2s.weak_model
        self.file_answers: dict[str, str] | None = (
            {str(r["id"]): str(r["answer"]) for _, r in iter_jsonl(w2s.weak_answers_file)}
            if w2s.weak_answers_file else None)
        self._start_rollout = start_rollout
        self.rollout: RolloutManager | None = None

    def answers(self, problems: list[Problem], prompt: Callable[[Problem], str]) -> dict[str, str]:
        """The weak supervisor's answer per problem id (problems it cannot answer are left out)."""
        if self.file_answers is not None:
            return self.file_answers
        if not self.model:
            return {}
        if self.rollout is None:
            self.rollout = self._start_rollout(self.model)
        outs = self.rollout.generate([RolloutRequest(p.id, prompt(p), temperature=0.0) for p in problems])
        return {p.id: a for p, o in zip(problems, outs) if (a := extract_answer(o[0].response)) is not None}

    def shutdown(self) -> None:
        if self.rollout is not None:
            self.rollout.shutdown()
            self.rollout = None
