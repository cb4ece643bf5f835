"""Stage 1: the supervised warm-up that gives the loop a partly skilled student (torchtune's recipe shape: the
controller's file holds the loop, this one the warm-up).

`algo.sft.source` picks the targets: `gold` step-by-step solutions, the teacher's hierarchical thought templates
(SuperCorrect's HSFT), or the teacher's accepted corrections of the base model's own wrong solutions (LEMA). The
learner group trains `algo.sft.steps` steps in the learner role's placement, exports `<run_dir>/sft_model`, and
goes; a run that finds that export (a rerun, a resume) reuses it.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from rayscale.actors.learner import LearnerGroup
from rayscale.errors import ConfigError
from rayscale.prompts import format_solution
from rayscale.seeding import stable_seed
from rayscale.types import RolloutRequest, SFTExample

if TYPE_CHECKING:  # the trainer's services, no import cycle
    from rayscale.controller import Trainer


def stage1_sft(trainer: Trainer) -> str:
    """Train stage 1 if asked; returns the starting policy (the export, or the base model)."""
    cfg, inputs = trainer.cfg, trainer.inputs
    sft = cfg.algo.sft
    out = trainer.run_dir / "sft_model"
    if sft.source == "none" or sft.steps == 0:
        return inputs.model_path
    if (out / "config.json").is_file():
        print(f"stage 1: reusing {out}")
        return str(out)
    examples = sft_examples(trainer)
    learner_cfg = cfg.learner.model_copy(update={"lr": sft.lr})
    algo_cfg = cfg.algo.model_copy(update={"loss": "sft"})
    group = LearnerGroup(inputs.model_path, learner_cfg, algo_cfg, cfg.cluster.learner,
                         placement=trainer.placements["learner"], failure_grace_s=learner_cfg.failure_grace_s,
                         bucket_bytes=trainer.weight_sync.bucket_bytes, trust_remote_code=cfg.model.trust_remote_code)
    rng = random.Random(stable_seed(cfg.algo.seed, 1))
    start = time.perf_counter()
    for step in range(1, sft.steps + 1):
        metrics = group.train_sft(rng.sample(examples, min(sft.batch_size, len(examples))))
        if step % max(1, sft.steps // 10) == 0 or step == sft.steps:
            print(f"stage 1 sft step {step}/{sft.steps} loss {metrics['loss']:.4f} "
                  f"({time.perf_counter() - start:.0f}s)", flush=True)
    group.export_hf(out)
    group.shutdown()
    return str(out)


def sft_examples(trainer: Trainer) -> list[SFTExample]:
    """Stage-1 targets: gold solutions, the teacher's thought templates, or its corrections of the base model."""
    cfg = trainer.cfg
    sft, style = cfg.algo.sft, cfg.data.prompt_style
    pool = trainer.inputs.train[: sft.num_problems] if sft.num_problems else trainer.inputs.train
    if sft.source == "gold":
        pool = [p for p in pool if p.gold_steps]
        if not pool:
            raise ConfigError("algo.sft.source=gold needs problems with gold step-by-step solutions (GSM8K, "
                              "the synthetic task, or a JSONL with a steps field); use algo.sft.source=none "
                              "or templates")
        return [SFTExample(trainer.prompt(p), format_solution(p.gold_steps, p.gold_answer, style), p.id)
                for p in pool]
    if sft.source == "templates":
        templates = trainer.teacher.thought_templates(pool)
        return [SFTExample(trainer.prompt(p), t.to_text(), p.id) for p, t in zip(pool, templates) if t.accepted]
    # corrections: sample the base model once per problem, keep what is right, correct what is wrong
    base = trainer.start_rollout(trainer.inputs.model_path, "rollout", cfg.rollout)
    try:
        samples = base.generate([RolloutRequest(p.id, trainer.prompt(p), seed=stable_seed(cfg.algo.seed, 5, j))
                                 for j, p in enumerate(pool)])
    finally:
        base.shutdown()
    graded = trainer.grade(pool, samples)
    wrong = [(p, gs[0]) for p, gs in zip(pool, graded) if not gs[0].correct]
    corrections = trainer.correct(wrong)
    examples = [SFTExample(trainer.prompt(p), gs[0].sample.response, p.id) for p, gs in zip(pool, graded)
                if gs[0].correct]
    examples += [SFTExample(trainer.prompt(p), c.corrected_solution, p.id)
                 for (p, _), c in zip(wrong, corrections) if c.accepted]
    if not examples:
        raise ConfigError("algo.sft.source=corrections: the base model got no problem right and the teacher's "
                          "corrections were all rejected; use algo.sft.source=gold or templates")
    return examples
