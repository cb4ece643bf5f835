"""The teacher-correction actor: a thin Ray shell over `rayscale.teacher.teacher.Teacher`.

Backend per `teacher.backend`: `oracle` (gold solutions), `openai` (any chat-completions endpoint) or `local`
(a model in this actor). The API key is read here, in the actor's process, from the environment variable named
by `teacher.openai.api_key_env`: set it in the environment of the Ray nodes, never through `runtime_env`
(which Ray stores and shows in its dashboard).
"""

from __future__ import annotations

import ray

from rayscale.actors.placement import actor_location
from rayscale.config import TeacherConfig
from rayscale.data.problem import Problem
from rayscale.teacher.openai_client import probe_endpoint
from rayscale.teacher.records import Correction, CorrectionRequest, Localisation, ThoughtTemplate
from rayscale.teacher.teacher import make_teacher


class TeacherService:
    """The actor's body; `TeacherActor` is its Ray-remote form (kept apart so it can run in-process too)."""

    def __init__(self, teacher_cfg: TeacherConfig | dict, model_path: str | None = None):
        cfg = teacher_cfg if isinstance(teacher_cfg, TeacherConfig) else TeacherConfig.model_validate(teacher_cfg)
        self._cfg = cfg
        self._teacher = make_teacher(cfg, model_path)

    def correct(self, items: list[CorrectionRequest]) -> list[Correction]:
        return self._teacher.correct(items)

    def localise(self, items: list[CorrectionRequest]) -> list[Localisation]:
        return self._teacher.localise(items)

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
