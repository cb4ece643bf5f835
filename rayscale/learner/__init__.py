"""Per-rank learner logic (DeepSpeed engines, reference model, checkpoints); the Ray shell is rayscale.actors.learner."""
