"""One learner rank's engine: DeepSpeed over the policy, a frozen reference, and the per-call training step.

Plain Python (no Ray): `rayscale.actors.learner.LearnerRank` wraps it as an actor, one process per rank, all ranks
forming one torch.distributed group. Every public method that touches parameters is collective — all ranks call it
together, as LearnerGroup does. One bucket size (`bucket_bytes`, given at construction: `sync.bucket_size_mb` in a
run) bounds every ZeRO-3 gather: weight sync, HF export, checkpoint and reference copies. What trains, what leaves
the rank and where the reference lives (full fine-tuning or `learner.lora`'s adapters) is the weights object chosen
at construction (rayscale.learner.weights).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from rayscale.algos.batching import (
    PAD,
    EncodedPair,
    PackedBatch,
    TruncationCounts,
    collate,
    encode_pairs,
    encode_sft,
    micro_batches,
)
from rayscale.algos.forward import TargetLogps, batch_inputs, disable_dropout
from rayscale.algos.losses import LossParams, preference_loss, segment_sums
from rayscale.colocation import LEARNER_PARTS, Holdings
from rayscale.config import DEFAULT_BUCKET_BYTES, AlgoConfig, LearnerConfig
from rayscale.learner import deepspeed_config as dsc
from rayscale.learner import weights
from rayscale.sync import logprob_gap, output_check

CHECKPOINT_STATE = "learner_state.json"
DS_TAG = "state"  # one DeepSpeed checkpoint per directory: <dir>/deepspeed/state/
REFERENCE_ADAPTER = "lora-adapter"  # learner_state.json: the reference is the policy's LoRA reference adapter


class LearnerEngine:
    def __init__(self, rank: int, world_size: int, model_path: str, learner_cfg: LearnerConfig | dict,
                 algo_cfg: AlgoConfig | dict, ref_model_path: str | None = None, device: str = "cpu",
                 trust_remote_code: bool = False, bucket_bytes: int = DEFAULT_BUCKET_BYTES):
        self.rank, self.world_size = rank, world_size
        self.bucket_bytes = int(bucket_bytes)  # every ZeRO-3 gather: sync, export, checkpoint, reference copies
        self.trust_remote_code = trust_remote_code  # model.trust_remote_code: policy and reference, every load
        self.cfg = LearnerConfig.model_validate(learner_cfg)
        self.loss_params = LossParams.from_algo(AlgoConfig.model_validate(algo_cfg))
        self.model_path = model_path
        self.device = device
        self.ref_source: str = ref_model_path or model_path  # HF dir of the current reference; None = from policy
        self.weights = weights.choose(self.cfg.lora, policy_is_reference=self.ref_source == model_path)
        self.step = 0
        self.holdings = Holdings(f"learner rank {rank}", LEARNER_PARTS)  # cluster.colocate's hand-overs
        self._store = None
        self._ref_cache: dict[tuple, tuple[float, float]] = {}
        self.autocast = dsc.autocast_dtype(self.cfg)  # bf16-autocast: the forwards' matmuls in bf16, weights fp32
        # True while the reference holds exactly the policy's weights (the start, when both load the same
        # directory; right after set_reference_from_policy): the next step's reference log-probs are then the
        # policy's own, taken from its forward instead of a second pass (when that forward is deterministic:
        # weights.deterministic_forward). Cleared by every optimizer step.
        self._ref_is_policy = self.ref_source == model_path

    # ------------------------------------------------------------------------------------------- setup
    def create_store(self, host: str) -> int:
        """Rank 0: open the rendezvous store on a port the OS picks while binding it (no find-then-bind race with
        other jobs on the host); the port goes to the other ranks as MASTER_PORT."""
        self._store = dist.TCPStore(host, 0, self.world_size, is_master=True, wait_for_workers=False,
                               timeout=timedelta(seconds=self.cfg.collective_timeout_s))
        return self._store.port

    def init(self, master_addr: str, master_port: int, local_rank: int = 0) -> dict[str, Any]:
        cuda = self.device.startswith("cuda")
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size),
                          # Ray gives each GPU rank its own device as cuda:0; DeepSpeed picks cuda:LOCAL_RANK.
                          LOCAL_RANK="0" if cuda else str(local_rank))
        if not cuda:
            os.environ["DS_ACCELERATOR"] = "cpu"  # even where a GPU is visible, this rank was asked for the CPU
        else:
            torch.cuda.set_device(0)
        timeout = timedelta(seconds=self.cfg.collective_timeout_s)
        if self._store is None:
            self._store = dist.TCPStore(master_addr, master_port, self.world_size, is_master=False, timeout=timeout)
        backend = "nccl" if cuda else "gloo"
        dist.init_process_group(backend, store=self._store, rank=self.rank, world_size=self.world_size,
                                timeout=timeout)
        _skip_cpu_shm_op()
        _deepspeed().init_distributed(dist_backend=backend, timeout=timeout)
        self._comm_device = torch.device("cuda", 0) if cuda else torch.device("cpu")

        from rayscale.models import load_tokenizer  # local: transformers is heavy

        self.tokenizer = load_tokenizer(self.model_path, self.trust_remote_code)
        if self.cfg.threads and not cuda:  # learner.threads: Ray set floor(num_cpus) through OMP_NUM_THREADS
            torch.set_num_threads(self.cfg.threads)
        torch.manual_seed(self.cfg.seed)
        ds_config = dsc.policy_config(self.cfg, self.device)
        if self.cfg.offload != "none" and not dsc.offloads(self.cfg, self.device):
            print(f"learner.offload={self.cfg.offload} has no effect on a CPU rank: its parameters and optimizer "
                  "states are in host memory already", flush=True)
        policy = self._load_hf(self.model_path, zero3=self.cfg.zero_stage == 3, ds_config=ds_config)
        if self.cfg.gradient_checkpointing:  # non-reentrant: works under ZeRO-3 and with frozen inputs
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            policy.config.use_cache = False
        self.weights.prepare(policy)  # LoRA: adapters injected in place; `policy` stays the HF model trained
        trainable = [p for p in policy.parameters() if p.requires_grad]  # the optimizer holds these only
        self.policy, *_ = _deepspeed().initialize(model=TargetLogps(policy), model_parameters=trainable,
                                               config=ds_config, lr_scheduler=dsc.make_scheduler(self.cfg))
        self.bf16 = dsc.use_bf16(self.cfg, self.device)
        if self.cfg.zero_stage == 0 and not self.bf16:
            _keep_fp32_grad_norm(self.policy)
        self._init_reference(self.ref_source)
        return {"rank": self.rank, "device": str(self._comm_device), "backend": backend,
                "threads": torch.get_num_threads(),
                "parameters": sum(getattr(p, "ds_numel", p.numel()) for p in self.hf_model.parameters()),
                "trainable_parameters": sum(getattr(p, "ds_numel", p.numel()) for p in trainable)}

    @property
    def hf_model(self) -> torch.nn.Module:
        return self.policy.module.model

    def _load_hf(self, path: str, zero3: bool, ds_config: dict, dtype: torch.dtype = torch.float32):
        """Load an HF causal LM; under ZeRO-3 inside zero.Init, so no rank ever holds the whole model."""
        from transformers import AutoModelForCausalLM  # local: transformers is heavy (seconds)
        from transformers.integrations import HfDeepSpeedConfig  # local: as above
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config  # local: as above

        hf_ds = HfDeepSpeedConfig(ds_config) if zero3 else None  # noqa: F841 (alive = zero.Init on load)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa",
                                                         trust_remote_code=self.trust_remote_code)
        finally:
            if zero3:
                unset_hf_deepspeed_config()
        disable_dropout(model)
        return model

    def _init_reference(self, path: str) -> None:
        """ref_mode: zero3 = a ZeRO-3 inference engine (sharded, gathered layer by layer); replicated = a full frozen
        copy per rank, scoring every call's shard afresh; precompute = the same copy, scoring a batch once and
        remembering the scores while the same pairs come back (updates_per_iteration > 1). In every mode the
        reference scores the whole shard before the first policy forward (one pass per micro-batch). A reference
        inside the policy (LoRA with the policy's starting weights as reference: the policy with its frozen
        `reference` adapter active) loads nothing; precompute and replicated as above."""
        self._ref_cache.clear()
        if self.weights.reference_in_policy:
            self.ref = self.weights.reference(self.policy.module)
            return
        if self.cfg.ref_mode == "zero3":
            config = dsc.reference_config(self.cfg, self.device)
            model = self._load_hf(path, zero3=True, ds_config=config)
            self.ref, *_ = _deepspeed().initialize(model=TargetLogps(model), config=config)
        else:
            dtype = torch.bfloat16 if self.bf16 else torch.float32
            model = self._load_hf(path, zero3=False, ds_config={}, dtype=dtype).to(self._comm_device)
            self.ref = TargetLogps(model)
        self.ref.eval()
        self.ref.requires_grad_(False)

    # ------------------------------------------------------------------------------------------- training
    def train_dpo(self, pairs: list, global_pairs: int) -> dict[str, float]:
        self.holdings.require("train")
        started = time.perf_counter()
        batches, truncation, error = [], TruncationCounts(), None
        try:
            encoded, truncation = encode_pairs(self.tokenizer, pairs, self.cfg.max_seq_len)
            batches = self._collate(encoded, with_rejected=True)
        except Exception as e:  # noqa: BLE001 — re-raised below, on every rank together
            error = e
        self._agree(error)

        own_reference = (self.loss_params.needs_reference and self._ref_is_policy
                         and self.weights.deterministic_forward)
        refs = (self._reference_logps(batches) if self.loss_params.needs_reference and not own_reference
                else [None] * len(batches))
        sums: dict[str, float] = defaultdict(float)
        self.policy.train()
        for batch, ref in zip(batches, refs):
            b = batch.to(self._comm_device)
            seq, counts, n = self._sequence_logps(self.policy, b)
            if own_reference:  # the reference is the policy as it is now: its scores are this forward's
                ref = seq.detach()
            ref_c, ref_r = (ref[:n], ref[n:]) if ref is not None else (None, None)
            loss, metrics = preference_loss(seq[:n], seq[n:], ref_c, ref_r, counts[:n], counts[n:], self.loss_params)
            # Sum over this rank's pairs / its pair count; DeepSpeed averages ranks of equal size: the global mean.
            self.policy.backward(loss.sum() / len(pairs))
            for key, value in metrics.items():
                sums[key] += value.sum().item()
            sums["tokens"] += batch.pair_tokens
        return self._finish_step(sums, truncation, started, global_pairs)

    def train_sft(self, examples: list) -> dict[str, float]:
        self.holdings.require("train")
        started = time.perf_counter()
        batches, truncation, error = [], TruncationCounts(), None
        try:
            encoded, truncation = encode_sft(self.tokenizer, examples, self.cfg.max_seq_len)
            batches = self._collate(encoded, with_rejected=False)
        except Exception as e:  # noqa: BLE001
            error = e
        local_targets = sum(b.labels.numel() for b in batches)
        (global_targets,) = self._agree(error, local_targets)

        sums: dict[str, float] = defaultdict(float)
        self.policy.train()
        for batch in batches:
            b = batch.to(self._comm_device)
            with self._forward_precision():
                nll = -self.policy(**batch_inputs(b)).sum()
            # Token mean over the *global* batch: x world_size undoes DeepSpeed's average over ranks.
            self.policy.backward(nll * self.world_size / global_targets)
            sums["loss"] += nll.item()
            sums["tokens"] += batch.pair_tokens
        return self._finish_step(sums, truncation, started, global_targets)

    def _collate(self, encoded: list[EncodedPair], with_rejected: bool) -> list[PackedBatch]:
        pad = self.tokenizer.pad_token_id
        return [collate(mb, pad, with_rejected) for mb in micro_batches(encoded, self.cfg.micro_batch_size)]

    def _sequence_logps(self, model, b: PackedBatch) -> tuple[torch.Tensor, torch.Tensor, int]:
        with self._forward_precision():
            logps = model(**batch_inputs(b))  # float32 whatever the matmuls ran in (TargetLogps)
        seq = segment_sums(logps, b.target_seq, b.num_seqs)
        return seq, b.seq_token_counts(), b.num_rows

    def _forward_precision(self):
        """learner.precision=bf16-autocast: the forward under torch.autocast (bf16 matmuls: AMX on a CPU, tensor
        cores on a GPU); its backward follows the dtypes the forward recorded. Otherwise a no-op context."""
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        return torch.autocast(device_type, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None)

    def memory(self) -> dict[str, int]:
        """This rank's process memory: resident now and the peak since it started (the OS's high-water mark)."""
        import resource  # local: POSIX only, and only benchmarks ask

        rss = 0
        with open("/proc/self/statm") as f:  # Linux; 0 elsewhere
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return {"rss_bytes": rss, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}

    @torch.no_grad()
    def _reference_logps(self, batches: list[PackedBatch]) -> list[torch.Tensor]:
        if self.cfg.ref_mode != "precompute":
            return [self._sequence_logps(self.ref, b.to(self._comm_device))[0] for b in batches]
        # precompute: a local copy, so ranks may skip forwards independently (no collective inside).
        cache: dict[tuple, tuple[float, float]] = {}
        out = []
        for b in batches:
            keys = _pair_keys(b)
            if all(k in self._ref_cache for k in keys):
                scores = [self._ref_cache[k] for k in keys]
                seq = torch.tensor([s[0] for s in scores] + [s[1] for s in scores], device=self._comm_device)
            else:
                seq = self._sequence_logps(self.ref, b.to(self._comm_device))[0]
            n = b.num_rows
            cache.update({k: (seq[i].item(), seq[n + i].item()) for i, k in enumerate(keys)})
            out.append(seq.float())
        self._ref_cache = cache  # only the latest batch: bounded memory, hits when the same pairs come back
        return out

    def _finish_step(self, sums: dict[str, float], truncation: TruncationCounts, started: float,
                     normaliser: int) -> dict[str, float]:
        lr = float(self.policy.get_lr()[0])
        self.policy.step()
        self.step += 1
        self._ref_is_policy = False
        grad_norm = self.policy.get_global_grad_norm()
        keys = sorted(set(sums) | set(truncation.as_metrics()))
        local = {**sums, **truncation.as_metrics()}
        totals = self._all_reduce([local.get(k, 0.0) for k in keys])
        elapsed = self._all_reduce([time.perf_counter() - started], op=dist.ReduceOp.MAX)[0]
        total = dict(zip(keys, totals))
        counted = {"tokens"} | set(truncation.as_metrics())
        metrics = {k: (v if k in counted else v / normaliser) for k, v in total.items()}
        metrics.update(grad_norm=float(grad_norm) if grad_norm is not None else float("nan"), lr=lr,
                       tokens_per_s=total["tokens"] / max(elapsed, 1e-9), step=self.step, time_s=elapsed)
        return metrics

    # ------------------------------------------------------------------------------------------- collectives
    def _all_reduce(self, values: list[float], op=dist.ReduceOp.SUM) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t, op=op)
        return t.tolist()

    def _agree(self, error: BaseException | None, *values: float) -> list[float]:
        """A collective every rank reaches whether its own preparation failed or not: if any rank failed, all raise
        together instead of the healthy ones waiting forever inside the next ZeRO collective."""
        flag, *totals = self._all_reduce([1.0 if error else 0.0, *values])
        if error is not None:
            raise error
        if flag:
            raise RuntimeError(f"learner rank {self.rank}: another rank failed to prepare its shard (see its error); "
                               f"this rank stopped too")
        return [int(v) for v in totals]

    # ------------------------------------------------------------------------------------------- parameters
    def _named_parameters(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
        return list(model.named_parameters())  # tied weights once, under their first name (the embedding)

    def _iter_full(self, model: torch.nn.Module, zero3: bool) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, full tensor) on every rank; under ZeRO-3 gathered `bucket_bytes` at a time (all ranks in lock
        step). A tensor is valid until the next item: under ZeRO-3 it is re-partitioned when its bucket is left."""
        named = self._named_parameters(model)
        if not zero3:
            yield from ((name, p.data) for name, p in named)
            return
        for group in _buckets(named, self.bucket_bytes):
            with _deepspeed().zero.GatheredParameters([p for _, p in group], modifier_rank=None):
                yield from ((name, p.data) for name, p in group)

    def _iter_policy(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The policy's full parameters by HF name on every rank, as they leave the rank (LoRA: the merged
        W + (alpha/r)·B@A under the base names, fresh tensors: the training weights are not touched)."""
        return self.weights.exported(self.hf_model, lambda m: self._iter_full(m, self.cfg.zero_stage == 3))

    def iter_params_for_sync(self, every_rank: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        """Full policy parameters by HF name, in a stable order, yielded on rank 0 only (on every rank with
        `every_rank`: the ipc transport); all ranks must iterate it together (the ZeRO-3 gathers are collective).
        Copy or send each tensor before asking for the next."""
        self.holdings.require("send its weights", ("weights",))
        for name, tensor in self._iter_policy():
            if every_rank or self.rank == 0:
                yield name, tensor

    def gather_state_for_sync(self) -> dict[str, torch.Tensor] | None:
        """The full policy state dict (HF names, tied aliases and persistent buffers included) on rank 0's CPU."""
        state = {name: t.detach().to("cpu", copy=True) for name, t in self.iter_params_for_sync()}
        if self.rank != 0:
            return None
        first_name = {}
        for name, p in self.weights.named_parameters(self.hf_model, remove_duplicate=False):
            first_name.setdefault(id(p), name)
            if name not in state:
                state[name] = state[first_name[id(p)]]
        for name, buf in _persistent_buffers(self.hf_model):
            state[self.weights.state_name(name)] = buf.detach().to("cpu", copy=True)
        return state

    def set_reference_from_policy(self) -> None:
        """Freeze the current policy as the reference (after stage-1 SFT): inside the policy (LoRA: the trained
        adapter copied into the reference adapter, base weights shared, so reference == policy exactly), or into
        the reference copy, the weights as they leave the rank (LoRA: merged)."""
        self.holdings.require("copy the policy into the reference")
        if self.weights.reference_in_policy:
            self.weights.refresh_reference(self.hf_model)
            self._ref_cache.clear()
        else:
            self._copy_into_reference(self._iter_policy())
        self.ref_source = None
        self._ref_is_policy = True

    def _copy_into_reference(self, source: Iterable[tuple[str, torch.Tensor]]) -> None:
        targets = dict(self._named_parameters(self.ref.model))
        zero3_ref = self.cfg.ref_mode == "zero3"
        with torch.no_grad():
            for name, tensor in source:
                p = targets.pop(name)
                if zero3_ref:  # write the full tensor on rank 0; leaving the context re-partitions it to all
                    with _deepspeed().zero.GatheredParameters([p], modifier_rank=0):
                        if self.rank == 0:
                            p.data.copy_(tensor)
                else:
                    p.data.copy_(tensor)
        if targets:
            raise RuntimeError(f"reference parameters not covered by the source: {sorted(targets)[:5]}")
        self._ref_cache.clear()

    # ------------------------------------------------------------------------------------------- outputs
    @torch.no_grad()
    def score_greedy(self, prompts: list[str], continuations: list[list[int]]) -> dict[str, Any]:
        """The policy's argmax and top-2 logit gap along each continuation (rayscale.sync.output_check): what a
        rollout engine on the same weights must have generated greedily. Collective (every rank forwards)."""
        self.holdings.require("score the output check", ("weights",))
        self.policy.eval()  # LoRA dropout off (the model's own is always 0); the next step sets train() again
        scored = output_check.score_greedy(self.hf_model, self.tokenizer, prompts, continuations)
        return {"scores": scored, "dtype": "bfloat16" if self.bf16 else "float32"}

    @torch.no_grad()
    def score_tokens(self, contexts: list[tuple[str, str]], continuations: list[list[int]]) -> list[list[float]]:
        """The policy's log-probability of each engine-sampled token after its (prompt, prefix): the learner's
        side of the logprob gap (rayscale.sync.logprob_gap). Collective (every rank forwards)."""
        self.holdings.require("score sampled tokens", ("weights",))
        self.policy.eval()  # as in score_greedy
        return logprob_gap.score_tokens(self.hf_model, self.tokenizer, contexts, continuations)

    # ------------------------------------------------------------------------------------------- checkpoints
    def export_hf(self, out_dir: str) -> None:
        """The policy as a Hugging Face directory (config, safetensors, tokenizer) any from_pretrained loads."""
        self.holdings.require("export the policy")
        state = self.gather_state_for_sync()
        if self.rank == 0:
            self._save_hf(self.hf_model, state, out_dir)
        dist.barrier()

    def _save_hf(self, model, state: dict, out_dir: str) -> None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir, state_dict=state)
        self.tokenizer.save_pretrained(out_dir)

    def save_checkpoint(self, ckpt_dir: str) -> None:
        """<dir>/deepspeed (engine, optimizer, scheduler, per-rank ZeRO shards), <dir>/hf (policy export),
        <dir>/reference (only when the reference came from the policy), <dir>/learner_state.json."""
        self.holdings.require("save a checkpoint")
        root = Path(ckpt_dir)
        self.policy.save_checkpoint(str(root / "deepspeed"), tag=DS_TAG, client_state={"learner_step": self.step})
        self.export_hf(str(root / "hf"))
        if self.ref_source is None and not self.weights.reference_in_policy:  # else it is in deepspeed/ too
            ref_state = {name: t.detach().to("cpu", copy=True)
                         for name, t in self._iter_full(self.ref.model, self.cfg.ref_mode == "zero3")}
            if self.rank == 0:
                self._save_hf(self.ref.model, ref_state, str(root / "reference"))
        if self.rank == 0:
            (root / CHECKPOINT_STATE).write_text(json.dumps({
                "step": self.step, "num_ranks": self.world_size, "zero_stage": self.cfg.zero_stage,
                "lora": self.weights.lora,
                "reference": self.ref_source or (REFERENCE_ADAPTER if self.weights.reference_in_policy
                                                 else "reference"),
            }, indent=2))
        dist.barrier()

    def load_checkpoint(self, ckpt_dir: str) -> dict[str, Any]:
        self.holdings.require("load a checkpoint")
        root = Path(ckpt_dir)
        state_file = root / CHECKPOINT_STATE
        if not state_file.is_file():
            raise FileNotFoundError(f"{ckpt_dir}: not a learner checkpoint (no {CHECKPOINT_STATE})")
        state = json.loads(state_file.read_text())
        if (state["num_ranks"], state["zero_stage"]) != (self.world_size, self.cfg.zero_stage):
            raise ValueError(f"{ckpt_dir} was saved by {state['num_ranks']} ranks at ZeRO stage {state['zero_stage']}; "
                             f"this group has {self.world_size} ranks at stage {self.cfg.zero_stage} (ZeRO shards are "
                             f"per rank: resume with the same learner.num_ranks and learner.zero_stage)")
        if state.get("lora", False) != self.weights.lora:
            raise ValueError(f"{ckpt_dir} was saved {'with' if state.get('lora') else 'without'} learner.lora; "
                             f"resume with the same learner.lora.enabled (the modules differ)")
        ref_dir = state["reference"]
        if self.weights.reference_in_policy and ref_dir not in (REFERENCE_ADAPTER, self.model_path):
            raise ValueError(f"{ckpt_dir}: its reference is {ref_dir!r}, this LoRA learner's is its own base "
                             f"weights ({self.model_path}); resume with the same model.path and model.ref_path")
        loaded, client = self.policy.load_checkpoint(str(root / "deepspeed"), tag=DS_TAG,
                                                     load_optimizer_states=True, load_lr_scheduler_states=True)
        if loaded is None:
            raise FileNotFoundError(f"{ckpt_dir}/deepspeed/{DS_TAG}: DeepSpeed found no checkpoint to load")
        self.step = int(client["learner_step"])
        if ref_dir != REFERENCE_ADAPTER:  # a LoRA reference adapter came back with the module just loaded
            ref_path = str(root / "reference") if ref_dir == "reference" else ref_dir
            if ref_path != self.ref_source:
                self._load_reference_weights(ref_path)
        self.ref_source = None if ref_dir in ("reference", REFERENCE_ADAPTER) else ref_dir
        self._ref_cache.clear()
        self._ref_is_policy = False  # a resumed policy has moved from its reference (a checkpoint is after a step)
        return state

    def _load_reference_weights(self, path: str) -> None:
        from transformers import AutoModelForCausalLM  # local: transformers is heavy

        source = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                      trust_remote_code=self.trust_remote_code)
        self._copy_into_reference((name, p.data) for name, p in self._named_parameters(source))

    # ------------------------------------------------------------------------------------------- colocation
    def offload(self, parts: list[str]) -> dict[str, Any]:
        """cluster.colocate: give this rank's share of the GPU to the rollout engine beside it. "states": optimizer
        states, fp32 master weights and gradients; "weights": the bf16 weights and a whole-copy reference. To
        pinned host memory through DeepSpeed's offload_states; `reload` brings everything back before training.
        On a CPU rank nothing moves (its memory is host memory), but the hand-over is kept all the same."""
        self.holdings.release(parts)
        return {**self.holdings.report(), "moved": self._move_states(set(parts), "cpu")}

    def reload(self) -> dict[str, Any]:
        moved = self._move_states(set(self.holdings.parts) - self.holdings.held, "cuda")
        self.holdings.take()
        return {**self.holdings.report(), "moved": moved}

    def _move_states(self, parts: set[str], to: str) -> list[str]:
        if not self.device.startswith("cuda") or not parts:
            return []  # a CPU rank: nothing to free, the hand-over is bookkeeping only
        State = _deepspeed().runtime.zero.offload_config.OffloadStateTypeEnum
        moved = []
        # DeepSpeed moves ZeRO-1/2/3 optimizer buffers (not ZeRO-0's plain optimizer, not states it already
        # offloads itself: learner.offload=params)
        movable = self.cfg.zero_stage > 0 and self.cfg.offload != "params"
        if movable and to == "cpu":
            states = {"states": [State.optim_states, State.hp_params, State.lp_grads, State.contiguous_grad_buffer],
                      "weights": [State.lp_params]}
            include = [x for part in sorted(parts) for x in states[part]]
            self.policy.offload_states(include=include, pin_memory=True)
            moved += [x.value for x in include]
        elif movable:
            self.policy.reload_states()
            moved.append("deepspeed states")
        whole_reference = not self.weights.reference_in_policy and self.cfg.ref_mode != "zero3"
        if "weights" in parts and whole_reference:
            self.ref.to("cpu" if to == "cpu" else self._comm_device)
            moved.append("reference")
        torch.cuda.empty_cache()
        return moved

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------- helpers
def _deepspeed():
    """DeepSpeed, imported on first use rather than with this module: it takes seconds to import, and its first
    import picks the accelerator from DS_ACCELERATOR, which `init` sets for a CPU rank just before."""
    import deepspeed  # local: heavy, and reads DS_ACCELERATOR on first import (see above)

    return deepspeed


def _skip_cpu_shm_op() -> None:
    """Do not JIT-build DeepSpeed's CPU shared-memory all-reduce op. It only serves `inference_all_reduce` and only
    when LOCAL_SIZE equals the world size, which a Ray-launched group never sets, so it would be built and left
    idle. Building costs ~35 s of gcc per fresh machine, and every rank on a host compiles into the same torch
    extensions directory under a file lock: a rank killed mid-build leaves the lock behind and every later init on
    that host waits on it forever."""
    deepspeed = _deepspeed()
    if deepspeed.accelerator.get_accelerator().device_name() == "cpu":
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _keep_fp32_grad_norm(engine) -> None:
    """Without ZeRO and in fp32, DeepSpeed clips through `clip_fp32_gradients` and drops the norm it computed (every
    other path keeps it for get_global_grad_norm); keep it too, for the grad_norm metric."""
    clip_grad_norm_ = _deepspeed().runtime.utils.clip_grad_norm_

    def clip_and_keep() -> None:
        engine._global_grad_norm = clip_grad_norm_(parameters=engine.module.parameters(),
                                                   max_norm=engine.gradient_clipping(), mpu=engine.mpu)

    engine.clip_fp32_gradients = clip_and_keep


def _buckets(named: list[tuple[str, torch.nn.Parameter]], bucket_bytes: int) -> Iterator[list]:
    group, size = [], 0
    for name, p in named:
        nbytes = getattr(p, "ds_numel", p.numel()) * p.element_size()
        if group and size + nbytes > bucket_bytes:
            yield group
            group, size = [], 0
        group.append((name, p))
        size += nbytes
    if group:
        yield group


def _persistent_buffers(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    for module_name, module in model.named_modules():
        for name, buf in module.named_buffers(recurse=False):
            if buf is not None and name not in module._non_persistent_buffers_set:
                yield (f"{module_name}.{name}" if module_name else name), buf


def _pair_keys(b: PackedBatch) -> list[tuple]:
    """Content key of each row (its token ids and segment boundaries), for the precompute cache."""
    keys = []
    for i in range(b.num_rows):
        seg = b.segments[i]
        keep = seg != PAD
        keys.append((tuple(b.input_ids[i][keep].tolist()), tuple(seg[keep].tolist())))
    return keys
