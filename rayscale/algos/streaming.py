"""Streaming stages (`algo.stream_stages`): grade each rollout chunk as it comes back and send the wrong samples
a strategy will have corrected to the teacher while the other chunks are still generating.

Without streaming an iteration's collect is a chain of barriers (rollout, then verify everything, then the
teacher for every wrong sample). Here two stages run in threads of their own, and each call takes everything
that arrived since a call last started, so the verifier pool and the teacher get batches as big as the flow
allows. The verifier pool sees one caller at a time, as without streaming; the teacher up to
TEACHER_CALLS_IN_FLIGHT calls at once (a teacher actor serves them as its backend allows: see
rayscale.actors.teacher):

    rollout chunk done -> Streaming.chunk_done -> [verify stage] -> a prompt's samples all graded ->
    the strategy's teacher items (rayscale.algos.strategies.teacher_items) -> [teacher stage] -> corrections kept

The pair builders then run as before, in the same order, on the same graded samples; `correct` answers the
teacher items from what the teacher stage already returned (and asks the teacher for anything else). Which
samples go to the teacher is drawn per prompt (`prompt_rng`), so the pairs do not depend on the order in which
chunks came back. Pure: callables in, no Ray.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from rayscale.algos import pairs as P

TEACHER_CALLS_IN_FLIGHT = 4


class CoalescingStage:
    """Calls `fn(items)` in threads of its own, at most `max_in_flight` calls at once, each call on everything
    submitted since a call last started, and hands `on_result(items, results)` each batch. `close()` waits for
    everything submitted and raises the first error of `fn` or `on_result` (the stage stops at it)."""

    def __init__(self, name: str, fn: Callable[[list], list], on_result: Callable[[list, list], None],
                 max_in_flight: int = 1):
        self.name, self.fn, self.on_result = name, fn, on_result
        self._items: list = []
        self._cond = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        # calls made; seconds during which at least one call ran (the stage's own duration beside the rollout)
        self.calls, self.busy_s = 0, 0.0
        self._running, self._busy_since = 0, 0.0
        self._threads = [threading.Thread(target=self._run, name=f"rayscale-stream-{name}-{k}", daemon=True)
                         for k in range(max_in_flight)]
        for thread in self._threads:
            thread.start()

    def submit(self, items: Sequence) -> None:
        if not items:
            return
        with self._cond:
            if self._closed:
                raise RuntimeError(f"streaming stage {self.name}: submitted to after close")
            self._items.extend(items)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                if not self._items:
                    return  # closed, and nothing left
                batch, self._items = self._items, []
                self.calls += 1
                self._running += 1
                if self._running == 1:
                    self._busy_since = time.perf_counter()
            try:
                self.on_result(batch, self.fn(batch))
            except BaseException as e:  # noqa: BLE001 - handed to close(), which raises it in the caller's thread
                with self._cond:
                    self._error = self._error or e
                    self._items = []
                    self._closed = True  # later submits fail loudly instead of queueing for nobody
                    self._cond.notify_all()
            finally:
                with self._cond:
                    self._running -= 1
                    if self._running == 0:
                        self.busy_s += time.perf_counter() - self._busy_since


class Streaming:
    """One iteration's streaming stages. `chunk_done(indices, samples)` is called by the rollout manager as each
    chunk of requests is back (`on_chunk`); `graded()` waits for the verify stage; `correct(items)` answers the
    pair builders' teacher calls from the teacher stage.

    `verify((gold, response) list) -> results` and `correct([(Problem, Graded)]) -> corrections` are the
    controller's calls; `teacher_items(problem, graded) -> [(Problem, Graded)]` says which samples of a prompt
    its strategy will have corrected (none for a strategy that asks no teacher)."""

    def __init__(self, batch: Sequence[Any], verify: Callable[[list], list], correct: Callable[[list], list],
                 teacher_items: Callable[[Any, list[P.Graded]], list]):
        self.batch = list(batch)
        self.samples: list[list | None] = [None] * len(self.batch)
        self._correct, self._teacher_items = correct, teacher_items
        self._graded: list[list[P.Graded] | None] = [None] * len(self.batch)
        self._corrections: dict[int, Any] = {}  # id(Graded) -> its correction (the Graded objects live on)
        # the teacher: a few calls at once, so that one call's slowest answer does not hold back the samples graded
        # since (its backend's own concurrency applies inside each call); the verifier pool: one caller, as ever
        self.teacher = CoalescingStage("teacher", correct, self._keep_corrections, TEACHER_CALLS_IN_FLIGHT)
        self.verify = CoalescingStage("verify", lambda keys: verify([self._payload(k) for k in keys]),
                                      self._grade)

    # ---------------------------------------------------------------------------------------- the stages
    def chunk_done(self, indices: Sequence[int], samples: Sequence[list]) -> None:
        for i, ss in zip(indices, samples):
            self.samples[i] = ss
        self.verify.submit([(i, j) for i in indices for j in range(len(self.samples[i]))])

    def _payload(self, key: tuple[int, int]) -> tuple[str, str]:
        i, j = key
        return self.batch[i].gold_answer, self.samples[i][j].response

    def _grade(self, keys: list[tuple[int, int]], results: list) -> None:
        done: dict[int, dict[int, P.Graded]] = {}
        for (i, j), r in zip(keys, results):
            done.setdefault(i, {})[j] = P.Graded(self.samples[i][j], bool(r.correct), r.pred)
        for i, rows in done.items():  # a request's samples are always graded in one call (one chunk)
            self._graded[i] = [rows[j] for j in range(len(self.samples[i]))]
            self.teacher.submit(self._teacher_items(self.batch[i], self._graded[i]))

    def _keep_corrections(self, items: list, corrections: list) -> None:
        for (_, g), c in zip(items, corrections):
            self._corrections[id(g)] = c

    # ---------------------------------------------------------------------------------------- the ends
    def graded(self) -> list[list[P.Graded]]:
        """Every prompt's graded samples, in input order, once the verify stage has drained."""
        self.verify.close()
        missing = [i for i, g in enumerate(self._graded) if g is None]
        if missing:
            raise RuntimeError(f"streaming: {len(missing)} prompts never graded (e.g. {self.batch[missing[0]].id}): "
                               "their rollout chunk was not reported done")
        return self._graded  # type: ignore[return-value]

    def correct(self, items: list) -> list:
        """The teacher's corrections of `items`, in order: those the teacher stage has (waiting for it to
        drain), the teacher asked directly for any other."""
        self.teacher.close()
        missing = [it for it in items if id(it[1]) not in self._corrections]
        if missing:
            self._keep_corrections(missing, self._correct(missing))
        return [self._corrections[id(g)] for _, g in items]

    def busy_s(self) -> dict[str, float]:
        """Seconds each stage spent in its calls: how long the stage's own work took, beside the rollout."""
        return {stage.name: stage.busy_s for stage in (self.verify, self.teacher)}

    def close(self) -> None:
        """Stop both stages (an iteration that failed midway): wait for their threads, errors not raised."""
        for stage in (self.verify, self.teacher):
            try:
                stage.close()
            except BaseException:  # noqa: BLE001 - the collect already failed with its own error
                pass
