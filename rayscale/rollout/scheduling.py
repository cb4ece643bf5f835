"""Spreading rollout requests over workers: fixed shares (`balance`) or as workers have room (`Dispatch`).

Pure: no Ray. `RolloutManager.generate` (rayscale.actors.rollout) drives a `Dispatch` and does the Ray calls.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from rayscale.config import RolloutConfig


def balance(sizes: Sequence[int], num_workers: int) -> list[list[int]]:
    """Request indices per worker: largest first onto the least-loaded worker (ties: lowest index), so total
    samples per worker differ by at most the largest request; each list keeps input order."""
    if num_workers < 1:
        raise ValueError(f"need at least one worker, got {num_workers}")
    loads = [0] * num_workers
    shards: list[list[int]] = [[] for _ in range(num_workers)]
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        w = min(range(num_workers), key=lambda w: loads[w])
        shards[w].append(i)
        loads[w] += sizes[i]
    return [sorted(s) for s in shards]


def chunk_requests(sizes: Sequence[int], max_samples: int, num_workers: int) -> list[list[int]]:
    """Consecutive request indices in chunks of at most `max_samples` samples (a request is never split: its
    samples share its seed), and no bigger than an even share per worker, so that a small batch still reaches
    every worker. A request larger than the limit is a chunk of its own."""
    if num_workers < 1:
        raise ValueError(f"need at least one worker, got {num_workers}")
    if num_workers == 1:  # nobody to balance against: one call keeps the engine's batch whole (a worker serves
        return [list(range(len(sizes)))] if sizes else []  # its chunks one after another, in smaller batches)
    limit = max(1, min(max_samples, math.ceil(sum(sizes) / num_workers)))
    chunks: list[list[int]] = []
    held = 0
    for i, size in enumerate(sizes):
        if chunks and held + size <= limit:
            chunks[-1].append(i)
            held += size
        else:
            chunks.append([i])
            held = size
    return chunks


class Dispatch:
    """Which chunk of requests goes to which worker, decided as workers report back.

    Dynamic (`pinned=None`): each worker holds up to `per_worker` chunks; whichever finishes one gets the next
    waiting chunk. A worker is given a chunk beyond its first only while more chunks wait than there are workers:
    that hides the round trip between chunks in the bulk, and at the end no chunk waits behind a running one
    while another worker idles (the tail that sets the stage's time). Fixed shares (`pinned[c]` = the worker of chunk c): every chunk waits for its own worker. A
    worker that is lost gives its chunks back to the front of the queue (dynamic: for any worker; fixed: for its
    replacement); a chunk's result is accepted once, from the worker it is running on, so nothing is doubled."""

    def __init__(self, chunks: Sequence[Sequence[int]], num_workers: int, per_worker: int = 1,
                 pinned: Sequence[int] | None = None):
        if num_workers < 1 or per_worker < 1:
            raise ValueError(f"need at least one worker and one chunk each, got {num_workers} and {per_worker}")
        self.chunks = [list(c) for c in chunks]
        self.num_workers, self.per_worker = num_workers, per_worker
        self.pinned = list(pinned) if pinned is not None else None
        self.waiting: deque[int] = deque(range(len(self.chunks)))
        self.running: list[list[int]] = [[] for _ in range(num_workers)]
        self.losses = [0] * len(self.chunks)  # times each chunk's worker was lost while running it
        self.finished: set[int] = set()
        # Workers whose holdings changed since the last `assign`: only they can take a chunk now (the others were
        # full, or held back by the tail rule, which only tightens as the queue shrinks), so one assign costs
        # what changed, not the number of workers.
        self._changed: set[int] = set(range(num_workers))

    @classmethod
    def for_rollout(cls, sizes: Sequence[int], num_workers: int, cfg: RolloutConfig) -> Dispatch:
        """The dispatch `rollout.*` asks for, for requests of `sizes` samples: `dispatch=fixed`, one share per
        worker; `dynamic`, chunks of at most `chunk_samples`, `chunks_in_flight` per worker."""
        if cfg.dispatch == "fixed":
            return cls.fixed_shares(sizes, num_workers)
        return cls(chunk_requests(sizes, cfg.chunk_samples, num_workers), num_workers, cfg.chunks_in_flight)

    @classmethod
    def fixed_shares(cls, sizes: Sequence[int], num_workers: int) -> Dispatch:
        """Today's scheduler as a dispatch: one share per worker (`balance`), each pinned to it."""
        shares = [(w, s) for w, s in enumerate(balance(sizes, num_workers)) if s]
        return cls([s for _, s in shares], num_workers, 1, pinned=[w for w, _ in shares])

    @property
    def done(self) -> bool:
        return len(self.finished) == len(self.chunks)

    def assign(self) -> list[tuple[int, int]]:
        """(worker, chunk) pairs to send now: dynamic fills the workers round by round (each worker's first
        chunk before anyone's second), in queue order; fixed sends every waiting chunk to its worker."""
        out: list[tuple[int, int]] = []
        if self.pinned is not None:
            while self.waiting:
                c = self.waiting.popleft()
                out.append((self.pinned[c], c))
                self.running[self.pinned[c]].append(c)
            return out
        candidates = sorted(self._changed)
        self._changed.clear()
        for depth in range(self.per_worker):
            for w in candidates:
                if len(self.waiting) <= (self.num_workers if depth else 0):
                    return out  # the last chunks go to idle workers only, never behind a running one
                if len(self.running[w]) <= depth:
                    c = self.waiting.popleft()
                    self.running[w].append(c)
                    out.append((w, c))
        return out

    def complete(self, worker: int, chunk: int) -> bool:
        """The worker returned the chunk's results: True if they are to be kept (it was running there)."""
        if chunk not in self.running[worker]:
            return False
        self.running[worker].remove(chunk)
        self.finished.add(chunk)
        self._changed.add(worker)
        return True

    def lose(self, worker: int) -> list[int]:
        """The worker died: its running chunks go back to the front of the queue, in order; returned."""
        lost, self.running[worker] = self.running[worker], []
        for c in lost:
            self.losses[c] += 1
        self.waiting.extendleft(reversed(lost))
        self._changed.update(range(self.num_workers))  # the queue grew: any worker may take a chunk again
        return lost
