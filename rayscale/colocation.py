"""Colocation (`cluster.colocate`): rollout workers and learner ranks take turns on the devices they share.

Rollout worker i and learner rank i run in one placement-group bundle (rayscale.plan: one GPU between them on a
GPU cluster). Each iteration hands the device over twice, in this order:

    start:       the learner offloads everything once its ranks are up (the engines generate first)
    to_learner:  engines sleep (KV cache freed; `rollout.vllm.sleep_level` 2 frees the weights too)
                 -> learner ranks reload their offloaded states                          ... the learner trains
    to_rollout:  learner ranks offload optimizer states, fp32 master weights and gradients
                 -> engines wake their weights -> weight sync (the learner's bf16 weights are still on the device)
                 -> learner ranks offload their weights and the reference
                 -> engines wake their KV cache                                          ... the engines generate

The learner lets go of its memory BEFORE each engine allocation, because OOM at `wake_up` is the failure users of
colocated trainers report most (vLLM RFC #15254, NeMo-RL #223). On a CPU nothing is freed (vLLM on CPU cannot
sleep; a CPU rank's states are in host memory already) but the same calls run, and each actor keeps a `Holdings`
that refuses work while its share is released, so an out-of-order hand-over fails loudly on CPU as on GPU.

Pure Python, no Ray: `Turns` drives whatever managers it is given (the controller's RolloutManager and
LearnerGroup); `Holdings` lives inside each actor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import Any

ENGINE_PARTS = ("weights", "kv_cache")  # what a rollout engine holds, and wakes in this order (vLLM's tags)
LEARNER_PARTS = ("states", "weights")  # optimizer states + master weights + grads; bf16 weights + reference


class ColocationError(RuntimeError):
    """An actor was asked to work while its share of a colocated device was handed to the other role."""


class Holdings:
    """What of its device memory one colocated actor holds now. Every actor starts holding everything."""

    def __init__(self, who: str, parts: Iterable[str]):
        self.who, self.parts = who, tuple(parts)
        self.held = set(self.parts)
        self.releases = 0  # how many times it gave its share up (reported, so tests count what happened)

    def release(self, parts: Iterable[str] | None = None) -> None:
        had = bool(self.held)
        self.held -= self._known(self.parts if parts is None else parts)
        if had and not self.held:  # a whole hand-over (the learner's comes in two steps)
            self.releases += 1

    def take(self, parts: Iterable[str] | None = None) -> None:
        self.held |= self._known(self.parts if parts is None else parts)

    def require(self, work: str, parts: Iterable[str] | None = None) -> None:
        missing = [p for p in (self.parts if parts is None else parts) if p not in self.held]
        if missing:
            raise ColocationError(f"{self.who}: asked to {work} while its {' and '.join(missing)} are handed over "
                                  "to the role it shares its device with (cluster.colocate); the controller must "
                                  "hand the device back first (rayscale.colocation.Turns)")

    def report(self) -> dict[str, Any]:
        return {"held": sorted(self.held), "releases": self.releases}

    def _known(self, parts: Iterable[str]) -> set[str]:
        parts = set(parts)
        unknown = parts - set(self.parts)
        if unknown:
            raise ValueError(f"{self.who}: unknown part(s) {sorted(unknown)}; expected some of {list(self.parts)}")
        return parts


class Turns:
    """The controller's hand-overs (a no-op unless `enabled`). `rollout` needs `sleep(level)` and
    `wake_up(tags)`, `learner` `offload(parts)` and `reload()`; each returns its actors' reports, and the last
    hand-over's are in `last` (the controller logs them with the iteration)."""

    def __init__(self, enabled: bool, sleep_level: int = 1):
        self.enabled, self.sleep_level = enabled, sleep_level
        self.last: dict[str, Any] = {}

    @property
    def sync_after_wake(self) -> bool:
        """Level 2 frees the engines' weights: every hand-over back must rewrite them, learning or not."""
        return self.enabled and self.sleep_level == 2

    def start(self, learner) -> None:
        """Right after the policy actors start (and a resumed run's first sync), the engines have the devices:
        the learner, which built its states there, lets go of them."""
        if self.enabled:
            self.last = {"learner_offload_at_start": learner.offload(list(LEARNER_PARTS))}

    def to_learner(self, rollout, learner) -> None:
        """Hand the devices to the learner: the engines sleep first, then the learner takes its memory back."""
        if not self.enabled:
            return
        self.last = {"rollout_sleep": rollout.sleep(self.sleep_level), "learner_reload": learner.reload()}

    @contextmanager
    def learner_holds(self, rollout, learner, resync: Callable[[], None], generates: bool = False):
        """The learner's turn outside training (a checkpoint: its whole state must be on the device); `resync`
        rewrites the engines' weights afterwards where they were freed (sleep_level 2)."""
        self.to_learner(rollout, learner)
        try:
            yield
        finally:
            self.to_rollout(rollout, learner, resync if self.sync_after_wake else lambda: None, generates)

    def to_rollout(self, rollout, learner, sync: Callable[[], None], generates: bool = False) -> None:
        """Hand the devices back to the engines; `sync` pushes the learner's weights between the two wake-ups.
        `generates`: the sync makes the engines generate (`sync.verify`'s output check, scored by the learner),
        so the KV cache wakes before it and the learner's weights leave after it (both on the device meanwhile)."""
        if not self.enabled:
            sync()
            return
        steps = {"learner_offload_states": learner.offload(["states"]),
                 "rollout_wake_weights": rollout.wake_up(["weights"])}
        if generates:
            steps["rollout_wake_kv_cache"] = rollout.wake_up(["kv_cache"])
        sync()
        steps["learner_offload_weights"] = learner.offload(["weights"])
        if not generates:
            steps["rollout_wake_kv_cache"] = rollout.wake_up(["kv_cache"])
        self.last.update(steps)
