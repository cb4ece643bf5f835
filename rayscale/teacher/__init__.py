"""The teacher: hierarchical thought templates (SuperCorrect), first-error localisation (Step-DPO) and corrections
(LEMA) from an oracle, an OpenAI-compatible API or a local model. Pure logic, no Ray (see rayscale.actors.teacher).
"""

from rayscale.teacher.records import REJECT_REASONS, Correction, Localisation, ThoughtTemplate

__all__ = ["REJECT_REASONS", "Correction", "Localisation", "ThoughtTemplate", "make_teacher"]


def make_teacher(cfg, model_path=None):
    """`rayscale.teacher.teacher.make_teacher`, imported lazily (it pulls in httpx and the verifier)."""
    from rayscale.teacher.teacher import make_teacher as _make

    return _make(cfg, model_path)
