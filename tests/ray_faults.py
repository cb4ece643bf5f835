"""Killing an actor so a test can rely on it being dead.

`ray.kill` only asks for the kill: a call sent right after it may still be served by the old process (seen in CI: a
probe answered, so nothing was replaced). Tests that kill an actor and then check how the project recovers wait here
until the actor refuses calls.
"""

from __future__ import annotations

import time


def kill_and_wait_dead(actor, timeout_s: float = 60.0) -> None:
    import ray  # tests that use this already run Ray; the module stays importable without it

    ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return
        except ray.exceptions.GetTimeoutError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"actor {actor} still answers {timeout_s:.0f} s after ray.kill")
