"""A deterministic, resumable cursor over a dataset: epochs of seeded permutations.

Its whole state is (epoch, position), saved in every controller checkpoint, so the iteration after a resume draws
exactly the prompts it would have drawn without the interruption.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass


@dataclass
class CursorState:
    epoch: int = 0
    position: int = 0


class PromptCursor:
    def __init__(self, size: int, seed: int, state: CursorState | None = None):
        if size <= 0:
            raise ValueError("cannot draw prompts from an empty dataset")
        self.size, self.seed = size, seed
        self.state = state or CursorState()
        self._order = self._permutation(self.state.epoch)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(self.size))
        random.Random(f"rayscale-cursor-{self.seed}-{epoch}").shuffle(order)
        return order

    def next_batch(self, k: int) -> list[int]:
        """The next k indices; an epoch boundary reshuffles and continues, so batches are always full."""
        out: list[int] = []
        while len(out) < k:
            if self.state.position >= self.size:
                self.state = CursorState(self.state.epoch + 1, 0)
                self._order = self._permutation(self.state.epoch)
            take = min(k - len(out), self.size - self.state.position)
            out.extend(self._order[self.state.position : self.state.position + take])
            self.state.position += take
        return out

    def state_dict(self) -> dict[str, int]:
        return asdict(self.state)

    @classmethod
    def from_state(cls, size: int, seed: int, state: dict[str, int]) -> PromptCursor:
        return cls(size, seed, CursorState(**state))
