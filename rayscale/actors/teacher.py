"""The teacher-correction actor: a thin Ray shell over `rayscale.teacher.teacher.Teacher`.

Backend per `teacher.backend`: `oracle` (gold solutions), `openai` (any chat-completions endpoint) or `local`
(a model in this actor). The API key is read here, in the actor's process, from the environment variable named
by `teacher.openai.api_key_env`: set it in the environment of the Ray nodes, never through `runtime_env`
(which Ray stores and shows in its dashboard).
"""

from __future__ import annotations

import threading

import ray
from ray.exceptions import RayError, RayTaskError

from rayscale.actors.placement import RolePlacement, actor_location
from rayscale.algos.streaming import TEACHER_CALLS_IN_FLIGHT
from rayscale.config import TeacherConfig
from rayscale.data.problem import Problem
from rayscale.errors import ConfigError
from rayscale.teacher.openai_client import probe_endpoint
from rayscale.teacher.records import (
    TEACHER_UNAVAILABLE,
    Correction,
    CorrectionRequest,
    ThoughtTemplate,
)
from rayscale.teacher.teacher import make_teacher


class TeacherService:
    """The actor's body; `TeacherActor` is its Ray-remote form (kept apart so it can run in-process too)."""

    def __init__(self, teacher_cfg: TeacherConfig | dict, model_path: str | None = None):
        cfg = teacher_cfg if isinstance(teacher_cfg, TeacherConfig) else TeacherConfig.model_validate(teacher_cfg)
        self._cfg = cfg
        self._teacher = make_teacher(cfg, model_path)

    def correct(self, items: list[CorrectionRequest]) -> list[Correction]:
        return self._teacher.correct(items)

    def thought_templates(self, problems: list[Problem | dict]) -> list[ThoughtTemplate]:
        return self._teacher.thought_templates(problems)

    def stats(self) -> dict:
        return self._teacher.stats()

    def ready(self) -> bool:
        return True

    def probe(self) -> None:
        """An `openai` endpoint must answer from here, where the requests go from (a ConfigError if not)."""
        if self._cfg.backend == "openai":
            probe_endpoint(self._cfg.openai)

    def location(self) -> dict:
        return actor_location()


TeacherActor = ray.remote(TeacherService)


class TeacherManager:
    """The run's one teacher actor, in the teacher role's placement: started here, replaced when it is lost. A lost
    teacher costs the batch it was working on (each item comes back rejected as `teacher_unavailable`, which the
    metrics count), never the run."""

    def __init__(self, teacher_cfg: TeacherConfig, placement: RolePlacement):
        self.cfg, self.placement = teacher_cfg, placement
        self._restart_lock = threading.Lock()
        self.actor = self._start()

    def _start(self):
        # Streaming stages send a few calls at once: the oracle and an HTTP endpoint serve each call on its own
        # (an HTTP call opens its own connections, up to teacher.openai.concurrency); a local model serves one.
        calls = 1 if self.cfg.backend == "local" else TEACHER_CALLS_IN_FLIGHT
        return TeacherActor.options(max_concurrency=calls, **self.placement.actor_options(0)).remote(self.cfg)

    def correct(self, items: list[CorrectionRequest]) -> list[Correction]:
        """The teacher's corrections, in order (rejected ones carry their reason). Safe from several threads
        (streaming stages): a lost actor is replaced once, by the first call that finds it lost."""
        if not items:
            return []
        actor = self.actor
        try:
            return ray.get(actor.correct.remote(items))
        except RayError as e:
            with self._restart_lock:
                if self.actor is actor:
                    print(f"teacher failed ({type(e).__name__}); restarting it", flush=True)
                    ray.kill(actor, no_restart=True)
                    self.actor = self._start()
            print(f"teacher: {len(items)} corrections lost ({type(e).__name__})", flush=True)
            return [Correction.rejected(it.prompt_id, TEACHER_UNAVAILABLE) for it in items]

    def thought_templates(self, problems: list[Problem]) -> list[ThoughtTemplate]:
        return ray.get(self.actor.thought_templates.remote(problems))

    def probe(self) -> None:
        """Ask the actor to reach its endpoint (an `openai` one must answer from where the requests will go): a
        ConfigError naming the URL and the error (exit 2), without the actor's traceback."""
        try:
            ray.get(self.actor.probe.remote())
        except RayTaskError as e:
            if isinstance(e.cause, ConfigError):
                raise ConfigError(str(e.cause)) from None
            raise

    def shutdown(self) -> None:
        ray.kill(self.actor)
