"""The teacher: hierarchical thought templates (SuperCorrect), first-error localisation (Step-DPO) and corrections
(LEMA) from an oracle, an OpenAI-compatible API or a local model. Pure logic, no Ray (see rayscale.actors.teacher).

The records are re-exported here; the teacher itself is `rayscale.teacher.teacher.make_teacher` (it pulls in httpx
and the verifier, which importing a record does not).
"""

from rayscale.teacher.records import (
    REJECT_REASONS,
    Correction,
    CorrectionRequest,
    Localisation,
    ThoughtTemplate,
)

__all__ = ["REJECT_REASONS", "Correction", "CorrectionRequest", "Localisation", "ThoughtTemplate"]
