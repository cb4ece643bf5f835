"""The keys of a metrics row (one line of <run_dir>/metrics.jsonl per iteration), named once: the controller and the
pair strategies write them, the tracker prints and plots them, `rayscale bench` and the failure checks read them.
Each value is part of the file format (and of wandb's charts): rename a constant freely, never its value.
"""

from __future__ import annotations

# ---- what every iteration row has
ITERATION = "iteration"  # 0: the evaluation before the first iteration
POLICY_VERSION = "policy_version"  # the weights the rollout workers hold after this iteration's sync
ITERATION_S = "iteration_s"  # the iteration's wall time
TIME = "time"  # {stage: seconds}, the stages below plus `overhead` (rayscale.timing)
STALENESS = "staleness"  # policy versions between the samples trained on and the learner (async: <= 1)
COLOCATE = "colocate"  # cluster.colocate: the last hand-over's report

# ---- collect: the rollouts and their grading
ACCURACY = "accuracy"  # share of this iteration's samples graded correct
SAMPLES = "samples"
TOKENS = "tokens"  # generated tokens
TOKENS_PER_S = "tokens_per_s"  # TOKENS / time.rollout
PROMPTS_DIGEST = "prompts_digest"
ROLLOUT_POLICY_VERSION = "rollout_policy_version"  # the oldest weights among the samples
PAIRS = "pairs"  # preference pairs built, all strategies
PAIRS_PREFIX = "pairs/"  # pairs/<strategy>: built by each strategy
CORRECTION_REQUESTS = "correction/requests"  # teacher calls asked (the correction strategy)
TEACHER_FAILED_PREFIX = "teacher/failed/"  # teacher/failed/<reason>: counted per failed answer
# algo.stream_stages: seconds each streaming stage spent in its calls (beside the rollout; `time.verify` and
# `time.<strategy>` then hold only what was left once the last chunk was back)
STREAM_BUSY_PREFIX = "stream/busy_s/"  # stream/busy_s/verify, stream/busy_s/teacher

# ---- learn and sync
LEARNER_PREFIX = "learner/"  # learner/<what the engine's step returns>
LEARNER_TOKENS = LEARNER_PREFIX + "tokens"
LEARNER_LOSS = LEARNER_PREFIX + "loss"
LEARNER_MARGINS = LEARNER_PREFIX + "rewards/margins"
LEARNER_CHOSEN = LEARNER_PREFIX + "rewards/chosen"
LEARNER_REJECTED = LEARNER_PREFIX + "rewards/rejected"
SYNC_BYTES = "sync/bytes"  # only in rows that synced
SYNC_TRANSPORT = "sync/transport"
LOGPROB_GAP = "logprob_gap"  # engine vs learner on sampled tokens (rayscale.sync.logprob_gap)
LOGPROB_GAP_MAX = "logprob_gap_max"

# ---- held-out evaluation (rows of iterations that evaluated)
EVAL_GREEDY = "eval/greedy_acc"
EVAL_SAMPLED = "eval/sampled_acc"


def eval_acc(mode: str) -> str:
    """EVAL_GREEDY or EVAL_SAMPLED by the mode's name."""
    return f"eval/{mode}_acc"


# ---- the stages of TIME (the controller's StageTimer names); each pair strategy is a stage of its own name
STAGE_ROLLOUT = "rollout"
STAGE_VERIFY = "verify"
COLLECT_STAGES = (STAGE_ROLLOUT, STAGE_VERIFY)  # timed in collect(), with the strategies' stages
STAGE_HAND_OVER = "hand_over"  # cluster.colocate: the engines sleep, the learner takes the devices
STAGE_TRAIN = "train"
STAGE_REF_UPDATE = "ref_update"
STAGE_WAIT_ROLLOUT = "wait_rollout"
STAGE_SYNC = "sync"
STAGE_EVAL = "eval"
