"""Spreading rollout requests over workers."""

from __future__ import annotations

from collections.abc import Sequence


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
