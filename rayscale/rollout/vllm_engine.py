"""The `vllm` rollout backend: a vLLM engine inside the rollout actor (vLLM is imported lazily).

Weights are updated inside vLLM's own worker processes: `worker_extension_cls` mixes
`rayscale.rollout.vllm_extension.SyncWorkerExtension` into every vLLM worker, and `LLM.collective_rpc` calls it,
so each tensor-parallel worker joins the sync group as its own member and loads the broadcast buckets through
vLLM's in-place `reload_weights` (which shards, fuses and post-processes by checkpoint name).
Written against vLLM 0.33's API (LLM, SamplingParams, TokensPrompt, collective_rpc, reload_weights).
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from rayscale.config import RolloutConfig
from rayscale.sync.buckets import Bucket
from rayscale.types import RolloutRequest, Sample

EXTENSION = "rayscale.rollout.vllm_extension.SyncWorkerExtension"


class VLLMEngine:
    def __init__(self, model_path: str, cfg: RolloutConfig, seed_salt: int = 0, trust_remote_code: bool = False):
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError("rollout.backend=vllm needs vLLM: pip install 'rayscale[vllm]' (CUDA only)") from e
        v = cfg.vllm
        self.cfg = cfg
        self.llm = LLM(model=model_path, tensor_parallel_size=v.tensor_parallel_size,
                       gpu_memory_utilization=v.gpu_memory_utilization, enforce_eager=v.enforce_eager,
                       max_model_len=v.max_model_len, dtype=v.dtype, seed=cfg.seed + seed_salt,
                       trust_remote_code=trust_remote_code, worker_extension_cls=EXTENSION)
        self.tokenizer = self.llm.get_tokenizer()
        self.sync_ranks = self.llm.get_world_size(include_dp=False)
        self._rng = random.Random(f"{cfg.seed}:{seed_salt}")

    def generate(self, requests: list[RolloutRequest], version: int) -> list[list[Sample]]:
        from vllm import SamplingParams, TokensPrompt

        encode = lambda text: self.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        prompts, params = [], []
        for req in requests:
            prompts.append(TokensPrompt(prompt_token_ids=encode(req.prompt) + (encode(req.prefix) if req.prefix else [])))
            params.append(SamplingParams(
                n=req.n, temperature=self.cfg.temperature if req.temperature is None else req.temperature,
                top_p=self.cfg.top_p, top_k=self.cfg.top_k, max_tokens=req.max_new_tokens or self.cfg.max_new_tokens,
                stop=list(self.cfg.stop) or None, seed=req.seed if req.seed is not None else self._rng.getrandbits(62),
                logprobs=0 if self.cfg.logprobs else None, skip_special_tokens=True))
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [[self._sample(req, o, version) for o in out.outputs] for req, out in zip(requests, outputs)]

    def _sample(self, req: RolloutRequest, o, version: int) -> Sample:
        ids = list(o.token_ids)
        logprobs = None
        if self.cfg.logprobs and o.logprobs is not None:
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

    def receive_weights(self, version: int, verify: bool) -> dict:
        reports = self.llm.collective_rpc("rayscale_receive_weights", args=(version, verify))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights
        return reports[0]

    def load_buckets(self, buckets: Iterable[Bucket]) -> None:
        # The object-store fallback: control-plane sized messages per bucket; the broadcast path is the fast one.
        self.llm.collective_rpc("rayscale_load_buckets",
                                args=([(b.meta.to_json(), b.flat.clone()) for b in buckets],))
        self.llm.reset_prefix_cache()

    def state_checksums(self) -> dict[str, int]:
        return self.llm.collective_rpc("rayscale_state_checksums")[0]
