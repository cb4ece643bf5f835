"""Counters behind `TeacherActor.stats()`: requests, failures by reason, rejections by task and reason, latency."""

from __future__ import annotations

import statistics
import threading
from collections import Counter, deque
from collections.abc import Iterable


class TeacherStats:
    def __init__(self, backend: str, latency_window: int = 10_000):
        self.backend = backend
        self.requests = 0
        self.attempts = 0
        self.request_failures: Counter[str] = Counter()
        self.items: Counter[str] = Counter()  # task -> items handled
        self.accepted: Counter[str] = Counter()
        self.rejected: dict[str, Counter[str]] = {}
        self.seconds: Counter[str] = Counter()  # task -> wall time of its batch calls
        self._latencies: deque[float] = deque(maxlen=latency_window)  # recent requests only: bounded memory
        self._lock = threading.Lock()  # a teacher actor may serve several calls at once (streaming stages)

    def record_requests(self, results: Iterable) -> None:
        with self._lock:
            self._record_requests(results)

    def _record_requests(self, results: Iterable) -> None:
        for r in results:
            self.requests += 1
            self.attempts += r.attempts
            self._latencies.append(r.latency_s)
            if not r.ok:
                self.request_failures[r.error_reason or "unknown"] += 1

    def record_outcome(self, task: str, reject_reason: str | None) -> None:
        with self._lock:
            self._record_outcome(task, reject_reason)

    def add_seconds(self, task: str, seconds: float) -> None:
        with self._lock:
            self.seconds[task] += seconds

    def _record_outcome(self, task: str, reject_reason: str | None) -> None:
        self.items[task] += 1
        if reject_reason is None:
            self.accepted[task] += 1
        else:
            self.rejected.setdefault(task, Counter())[reject_reason] += 1

    def as_dict(self) -> dict:
        with self._lock:
            return self._as_dict()

    def _as_dict(self) -> dict:
        lat = sorted(self._latencies)
        latency = (
            {"mean": statistics.fmean(lat), "p50": lat[len(lat) // 2], "p95": lat[min(len(lat) - 1, int(0.95 * len(lat)))],
             "max": lat[-1]}
            if lat else {}
        )
        return {
            "backend": self.backend,
            "requests": self.requests,
            "retries": self.attempts - self.requests,
            "request_failures": dict(self.request_failures),
            "request_latency_s": latency,
            "tasks": {
                task: {
                    "items": n,
                    "accepted": self.accepted[task],
                    "rejected": dict(self.rejected.get(task, {})),
                    "seconds": round(self.seconds[task], 4),
                }
                for task, n in self.items.items()
            },
        }
