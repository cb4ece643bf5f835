"""The rules that tie configuration sections together, in one place: `validate(cfg)` runs once, when a config is
loaded (rayscale.config_loading), and raises ValueError naming the keys and the fix; the loader turns that into a
ConfigError (exit 2). A section's own field ranges stay on its model in rayscale.config.

Imports what the rules need (the strategy registry, the weight-sync transports): the schema module imports none of
it, so there is no import cycle.
"""

from __future__ import annotations

from rayscale.algos.pairs import strategy_mix
from rayscale.algos.strategies import strategy_names
from rayscale.config import AlgoConfig, RayscaleConfig
from rayscale.plan import amount, teacher_num_gpus
from rayscale.sync import transports


def validate(cfg: RayscaleConfig) -> RayscaleConfig:
    """Every cross-section rule; `cfg` back unchanged when it holds them all."""
    check_strategy(cfg.algo)
    w2s = cfg.algo.weak_to_strong
    if w2s.overrule_at < w2s.skip_below:
        raise ValueError("algo.weak_to_strong.overrule_at must be >= skip_below")
    if w2s.weak_model and w2s.weak_answers_file:
        raise ValueError("algo.weak_to_strong: give weak_model or weak_answers_file, not both")
    pairless = _pairless_strategies(cfg.algo)
    if pairless:
        raise ValueError(f"algo.samples_per_prompt=1 with algo.strategy {', '.join(pairless)}: these pair a "
                         "right with a wrong sample of the same prompt, so no pair can ever be built; set "
                         "algo.samples_per_prompt to 2 or more (4: the default), or use correction or "
                         "step_controlled, which pair one sample with its own continuation")
    resources_problem = _resources_problem(cfg)
    if resources_problem:
        raise ValueError(resources_problem)
    sync_problem = transports.problem(cfg)  # the chosen transport's capability check: here, once
    if sync_problem:
        raise ValueError(sync_problem)
    if cfg.cluster.colocate:
        colocation_problem = _colocation_problem(cfg)
        if colocation_problem:
            raise ValueError(f"cluster.colocate: {colocation_problem}")
    return cfg


def check_strategy(algo: AlgoConfig) -> None:
    """`algo.strategy`: a registered strategy, or a mix of them with non-negative weights and a positive sum. The
    registry, not a list: a strategy registered with @strategy is valid without editing config."""
    known = strategy_names()
    v = algo.strategy
    for name in [v] if isinstance(v, str) else list(v):  # every named one, zero weights too
        if name not in known:
            raise ValueError(f"algo.strategy: unknown strategy {name!r}; expected one of {', '.join(known)}")
    if isinstance(v, dict) and (not v or any(w < 0 for w in v.values()) or sum(v.values()) <= 0):
        raise ValueError("algo.strategy: a strategy mix needs non-negative weights with a positive sum")


# Strategies that compare two samples of one prompt: with one sample per prompt they never build a pair.
TWO_SAMPLE_STRATEGIES = ("outcome", "weak_to_strong")


def _pairless_strategies(algo: AlgoConfig) -> list[str]:
    """The strategies of `algo` that can build no pair at its samples_per_prompt (none: every one can)."""
    if algo.samples_per_prompt > 1:
        return []
    used = strategy_mix(algo.strategy)
    return [n for n in used if n in TWO_SAMPLE_STRATEGIES]


def _resources_problem(cfg: RayscaleConfig) -> str | None:
    """Why the roles' devices and `cluster.<role>` resources cannot be placed as asked (None: they can). What the
    cluster's nodes hold is placement's check (rayscale.plan.require_fit), at run time."""
    c = cfg.cluster
    if cfg.rollout.backend == "vllm":
        tp, gpus = cfg.rollout.vllm.tensor_parallel_size, c.rollout.num_gpus
        if tp > 1 and gpus != tp:
            return (f"cluster.rollout.num_gpus={amount(gpus)} but rollout.vllm.tensor_parallel_size={tp}: a vLLM worker "
                    f"needs its {tp} GPUs reserved on one node; set cluster.rollout.num_gpus={tp}"
                    + (" (vLLM on CPU runs tensor_parallel_size=1 only)" if gpus == 0 else ""))
    elif cfg.rollout.device == "cuda" and c.rollout.num_gpus == 0:
        return ("rollout.device=cuda but cluster.rollout.num_gpus=0: Ray would hide every GPU from the workers; set "
                "cluster.rollout.num_gpus (1 per worker)")
    if c.learner.num_gpus > 1:
        return (f"cluster.learner.num_gpus={amount(c.learner.num_gpus)}: a DeepSpeed rank drives one GPU; raise "
                "learner.num_ranks for more GPUs")
    if cfg.learner.device == "cuda" and c.learner.num_gpus <= 0:
        return "learner.device=cuda needs cluster.learner.num_gpus > 0 (one GPU per rank)"
    teacher_gpus = teacher_num_gpus(cfg)
    if cfg.teacher.backend == "local" and cfg.teacher.local.backend == "vllm" and 0 < teacher_gpus < 1:
        return (f"cluster.teacher.num_gpus={amount(teacher_gpus)}: a vLLM teacher takes a whole GPU (1) or none "
                "(0: vLLM on CPU)")
    for role in ("learner", "rollout", "teacher", "verifier"):  # each as rayscale.plan reserves its bundles
        res = getattr(c, role)
        bundle = res.bundle(num_gpus=teacher_gpus if role == "teacher" else res.num_gpus)
        for k, v in bundle.items():
            if v > 1 and not float(v).is_integer():
                return f"cluster.{role}: {k}={amount(v)}; Ray needs whole numbers above 1 (fractions only below 1)"
        if not bundle:
            return f"cluster.{role} reserves nothing (num_cpus=0, num_gpus=0); give it num_cpus > 0"
    return None


def _colocation_problem(cfg: RayscaleConfig) -> str | None:
    """Why `cfg` cannot colocate its rollout workers with its learner ranks (None: it can)."""
    workers, ranks = cfg.rollout.num_workers, cfg.learner.num_ranks
    if workers != ranks:
        return (f"rollout worker i shares learner rank i's bundle, so rollout.num_workers ({workers}) must equal "
                f"learner.num_ranks ({ranks})")
    if cfg.algo.async_rollout:
        return ("the engines and the learner take turns on the same devices, so rollouts cannot overlap training: "
                "set algo.async_rollout: false (or cluster.colocate: false)")
    if cfg.rollout.backend == "vllm" and cfg.rollout.vllm.tensor_parallel_size > 1:
        return ("a colocated vLLM worker lives on its learner rank's one GPU: rollout.vllm.tensor_parallel_size "
                "must be 1")
    gpus = {cfg.cluster.learner.num_gpus > 0, cfg.cluster.rollout.num_gpus > 0}
    if len(gpus) > 1:
        return (f"both roles must hold the GPU they share, or neither: cluster.learner.num_gpus="
                f"{cfg.cluster.learner.num_gpus:g}, cluster.rollout.num_gpus={cfg.cluster.rollout.num_gpus:g}")
    if cfg.cluster.learner.node_resource != cfg.cluster.rollout.node_resource:
        return ("the shared bundles go on one kind of node: cluster.learner.node_resource and "
                "cluster.rollout.node_resource must be the same")
    return None
