"""Exit statuses a scheduler can act on, and the run-time failures behind status 3.

    0    finished: every iteration ran, final_model written
    2    bad input: config, data, model directory, run directory, checkpoint to resume from (nothing ran, or the
         run cannot start from what is there); the message names the file or key and what to do
    3    a failure the run could not survive: a role that kept failing (learner out of memory, teacher failing most
         requests), a full disk; the message names the role, the cause and what to change
    130  stopped by SIGINT (Ctrl-C), 143 by SIGTERM (`ray job stop`, a scheduler), after writing a checkpoint:
         rerun with checkpoint.resume=auto to continue

A failure the run survives (a rollout worker or verifier replaced, a learner restart within
checkpoint.max_restarts, a teacher request failing) is reported on the console and in metrics.jsonl, not here.
"""

from __future__ import annotations

import signal

from rayscale import metric_names as M

FINISHED = 0
BAD_INPUT = 2
FAILED = 3
STOPPED = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}  # 130, 143: the shell's convention


class RunFailure(RuntimeError):
    """A failure the run cannot survive: the CLI prints it (no traceback) and exits with status 3."""

    def __init__(self, role: str, cause: str, fix: str):
        self.role, self.cause, self.fix = role, cause, fix
        super().__init__(f"{role} failed: {cause}. {fix}")


def death_cause(err: BaseException) -> str | None:
    """Why an actor is gone, when `err` says it is (None: the actor raised, it did not die). Ray reports an actor
    killed by its OOM killer, by a signal, or with its node in different exception types; each one is a death."""
    import ray.exceptions as rex  # Ray: only a caller that runs actors asks

    if isinstance(err, rex.OutOfMemoryError):
        return "killed by Ray's out-of-memory killer (the node ran low on memory)"
    if isinstance(err, rex.NodeDiedError):
        return "its node died"
    if isinstance(err, rex.WorkerCrashedError):
        return "its worker process crashed (killed by a signal, or it segfaulted)"
    if isinstance(err, rex.RayActorError):  # Ray says how in the message: its worker's exit type and detail
        text = str(err)
        if "NODE_OUT_OF_MEMORY" in text or "running low on memory" in text:
            return "killed by Ray's out-of-memory killer (the node ran low on memory)"
        if getattr(err, "preempted", False) or "node has died" in text or "NODE_DIED" in text:
            return "its node died"
        if "SYSTEM_ERROR" in text:
            return "its worker process died (killed by a signal, the kernel's OOM killer, or a crash)"
        return "the actor died (killed, or its process exited)"
    return None


LEARNER_MEMORY_FIX = ("Give each rank less to hold: a smaller learner.micro_batch_size, learner.gradient_checkpointing="
                      "true, learner.zero_stage 2 or 3 (learner.offload on GPU), a shorter learner.max_seq_len, or "
                      "fewer learner.num_ranks per node (cluster.learner.num_cpus/num_gpus so fewer fit a node)")


def actor_death_errors() -> tuple[type[BaseException], ...]:
    """The exception types of an actor call whose actor is gone: `except` these to replace the actor."""
    import ray.exceptions as rex  # Ray: only a caller that runs actors asks

    return (rex.RayActorError, rex.OutOfMemoryError, rex.NodeDiedError, rex.WorkerCrashedError)


def learner_failure(err: BaseException, max_restarts: int) -> RunFailure:
    """The run's last word on a learner group that kept failing: which role, why, and what to change."""
    cause = getattr(err, "cause", None)
    tried = f"after {max_restarts} restart(s) from the last checkpoint (checkpoint.max_restarts)"
    if cause and "memory" in cause:
        return RunFailure("learner", f"a learner rank was {cause}, {tried}", LEARNER_MEMORY_FIX)
    if cause and "worker process died" in cause:
        return RunFailure("learner", f"a learner rank's process died ({cause}), {tried}",
                          "If the kernel's OOM killer took it (`dmesg`), the rank needs less memory: "
                          + LEARNER_MEMORY_FIX[0].lower() + LEARNER_MEMORY_FIX[1:])
    return RunFailure("learner", f"{err}, {tried}", "The rank's own error is in the actor logs "
                      "(<run_dir>/logs/worker-<pid>.log; with tracking.verbose=true, Ray's "
                      "/tmp/ray/session_latest/logs/worker-*.err); raise checkpoint.max_restarts to retry more")


def check_teacher_failures(it: int, stats: dict, teacher_cfg) -> None:
    """Stop a run whose teacher failed more than `teacher.max_failed_fraction` of an iteration's requests (exit 3
    with the reasons): pairs would silently come only from what little got through."""
    asked = stats.get(M.CORRECTION_REQUESTS, 0)
    failed = {k.removeprefix(M.TEACHER_FAILED_PREFIX): v for k, v in stats.items()
              if k.startswith(M.TEACHER_FAILED_PREFIX)}
    if asked and sum(failed.values()) / asked > teacher_cfg.max_failed_fraction:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(failed.items(), key=lambda kv: -kv[1]))
        raise RunFailure(
            f"teacher ({teacher_cfg.backend})",
            f"{sum(failed.values())} of {asked} correction requests in iteration {it} got no answer ({reasons}), "
            f"more than teacher.max_failed_fraction={teacher_cfg.max_failed_fraction:g}",
            "Check the teacher server (its log, its rate limits: teacher.openai.concurrency, timeout_s), or raise "
            "teacher.max_failed_fraction to train on what gets through")
