"""Batched Hugging Face generation for rollouts (`HFEngine`, no Ray) and the `hf` rollout backend around it
(`HFBackend`: rayscale.rollout.backends.RolloutBackend).

A request becomes n rows (prompt ids + prefix ids, each row with its own seed, temperature and token limit);
rows are sorted by length, cut into batches of `batch_size`, left-padded and run through `model.generate`. The
prompt and the prefix are tokenized separately and concatenated, exactly as the learner will tokenize the pieces.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from rayscale.config import RolloutConfig
from rayscale.models import load_model, load_tokenizer
from rayscale.rollout.sampling import RowSampler, StopOnStrings, row_seed, truncate_at_stop
from rayscale.types import RolloutRequest, Sample
from rayscale.wire.buckets import Bucket, state_checksums
from rayscale.wire.group import Backend, SyncGroup
from rayscale.wire.handover import open_cuda
from rayscale.wire.protocol import receive_all
from rayscale.wire.receiver import ModelReceiver


@dataclass
class _Row:
    request: int  # index into the requests
    sample: int  # index among the request's n samples
    ids: list[int]  # prompt + prefix
    limit: int  # max new tokens
    temperature: float
    seed: int


class _RowLimit(StoppingCriteria):
    """Per-row max_new_tokens inside one batched generate call."""

    def __init__(self, limits: torch.Tensor, prompt_len: int):
        self.limits, self.prompt_len = limits, prompt_len

    def __call__(self, input_ids, scores, **kwargs):
        return (input_ids.shape[1] - self.prompt_len) >= self.limits


class HFEngine:
    def __init__(self, model, tokenizer, cfg: RolloutConfig, seed_salt: int = 0):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.cfg = cfg
        self._rng = random.Random(f"{cfg.seed}:{seed_salt}")  # seeds for requests that bring none
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
            eos.append(tokenizer.eos_token_id)
        self.eos_ids = set(eos)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
        self._gen_cfg = GenerationConfig(do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=self.pad_id,
                                         bos_token_id=model.generation_config.bos_token_id)

    @classmethod
    def from_path(cls, path: str, cfg: RolloutConfig, dtype: str = "auto", seed_salt: int = 0,
                  trust_remote_code: bool = False) -> HFEngine:
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        model = load_model(path, dtype, device, trust_remote_code)
        return cls(model, load_tokenizer(path, trust_remote_code), cfg, seed_salt)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, requests: list[RolloutRequest], policy_version: int = 0) -> list[list[Sample]]:
        rows = self._rows(requests)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i].ids))  # similar lengths batch together
        out: list[list[Sample | None]] = [[None] * r.n for r in requests]
        bs = self.cfg.batch_size
        for start in range(0, len(order), bs):
            batch = [rows[i] for i in order[start : start + bs]]
            for row, sample in zip(batch, self._generate_batch(batch, requests)):
                sample.policy_version = policy_version
                out[row.request][row.sample] = sample
        return out  # type: ignore[return-value]

    def _rows(self, requests: list[RolloutRequest]) -> list[_Row]:
        encode = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        rows = []
        for i, req in enumerate(requests):
            if req.n < 1:
                raise ValueError(f"request {req.prompt_id!r}: n must be >= 1, got {req.n}")
            ids = encode(req.prompt) + (encode(req.prefix) if req.prefix else [])
            if not ids:
                raise ValueError(f"request {req.prompt_id!r}: empty prompt")
            temperature = self.cfg.temperature if req.temperature is None else req.temperature
            limit = req.max_new_tokens or self.cfg.max_new_tokens
            base = req.seed if req.seed is not None else self._rng.getrandbits(62)
            rows += [_Row(i, j, ids, limit, temperature, row_seed(base, j)) for j in range(req.n)]
        return rows

    @torch.no_grad()
    def _generate_batch(self, batch: list[_Row], requests: list[RolloutRequest]) -> list[Sample]:
        width = max(len(r.ids) for r in batch)
        dev = self.device
        input_ids = torch.tensor([[self.pad_id] * (width - len(r.ids)) + r.ids for r in batch], device=dev)
        mask = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in batch], device=dev)
        sampler = RowSampler(
            seeds=torch.tensor([r.seed for r in batch], dtype=torch.int64, device=dev),
            temperatures=torch.tensor([r.temperature for r in batch], dtype=torch.float32, device=dev),
            prompt_len=width, top_k=self.cfg.top_k, top_p=self.cfg.top_p,
            record_logprobs=any(self._wants_logprobs(requests[r.request]) for r in batch))
        limits = torch.tensor([r.limit for r in batch], device=dev)
        criteria = [_RowLimit(limits, width)] + ([StopOnStrings(self.tokenizer, self.cfg.stop, width)]
                                                  if self.cfg.stop else [])
        gen_cfg = copy.copy(self._gen_cfg)
        gen_cfg.max_new_tokens = int(limits.max())
        out = self.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=gen_cfg,
                                  logits_processor=LogitsProcessorList([sampler]),
                                  stopping_criteria=StoppingCriteriaList(criteria))
        generated = out[:, width:].tolist()
        logprobs = torch.stack(sampler.logprobs, 1).tolist() if sampler.logprobs else None
        return [self._sample(row, requests[row.request], ids,
                             logprobs[k] if logprobs and self._wants_logprobs(requests[row.request]) else None)
                for k, (row, ids) in enumerate(zip(batch, generated))]

    def _wants_logprobs(self, req: RolloutRequest) -> bool:
        return self.cfg.logprobs if req.logprobs is None else req.logprobs

    def _sample(self, row: _Row, req: RolloutRequest, ids: list[int], logprobs: list[float] | None) -> Sample:
        ended_by_eos = False
        for k, tok in enumerate(ids[: row.limit]):
            if tok in self.eos_ids:
                ids, ended_by_eos = ids[: k + 1], True
                break
        else:
            ids = ids[: row.limit]
            while ids and ids[-1] == self.pad_id:  # generate pads a row that a stop string ended
                ids = ids[:-1]
        body = ids[:-1] if ended_by_eos else ids
        text, hit_stop = truncate_at_stop(self._decode_continuation(row.ids, body), self.cfg.stop)
        if ended_by_eos or hit_stop:
            finish = "stop"
        else:
            finish = "length" if len(ids) >= row.limit else "stop"
        return Sample(prompt_id=req.prompt_id, prompt=req.prompt, prefix=req.prefix, text=text, token_ids=ids,
                      finish_reason=finish, logprobs=logprobs[: len(ids)] if logprobs is not None else None)

    def _decode_continuation(self, context: list[int], ids: list[int]) -> str:
        """Decode with a little context so tokenizers that drop a leading space at the start of a decode (SentencePiece)
        still give the continuation exactly as it reads after the prompt and prefix."""
        tail = context[-4:]
        head = self.tokenizer.decode(tail, skip_special_tokens=True)
        full = self.tokenizer.decode(tail + ids, skip_special_tokens=True)
        return full[len(head):] if full.startswith(head) else self.tokenizer.decode(ids, skip_special_tokens=True)


class HFBackend:
    """The `hf` rollout backend (rayscale.rollout.backends.RolloutBackend) around one HFEngine (`engine`)."""

    sync_ranks = 1

    def __init__(self, engine: HFEngine):
        self.engine = engine
        self.receiver = ModelReceiver(engine.model)
        self.group: SyncGroup | None = None

    @property
    def dtype(self) -> str:
        return str(next(self.engine.model.parameters()).dtype).removeprefix("torch.")

    @property
    def device(self):
        return self.engine.device

    def generate(self, requests, version: int):
        return self.engine.generate(requests, version)

    def init_sync_group(self, master_addr: str, master_port: int, world_size: int, rank: int, backend: Backend,
                        timeout_s: float) -> None:
        self.close_sync_group()
        self.group = SyncGroup.join(master_addr, master_port, world_size, rank, backend, timeout_s)

    def close_sync_group(self) -> None:
        if self.group is not None:
            self.group.close()
        self.group = None

    def receive_weights(self, version: int, verify: bool) -> dict:
        if self.group is None:
            raise RuntimeError("receive_weights before init_sync_group")
        device = self.group.device  # gloo receives on CPU; a GPU model then gets a copy (bound only on CPU)
        self.receiver.begin()
        # Every receive is posted at once (max_in_flight=None): the buffers are the model's own, bound last sync.
        report = receive_all(self.group, lambda meta: self.receiver.buffer_for(meta, device), self.receiver.apply,
                             version, verify, max_in_flight=None)
        self.receiver.finish()
        return report.summary()

    def load_cuda_handles(self, items: list, verify: bool) -> None:
        self.load_buckets(open_cuda(meta, handle, self.device, verify) for meta, (_, handle) in items)

    def load_buckets(self, buckets: Iterable[Bucket]) -> None:
        self.receiver.begin()
        device = self.engine.device
        for bucket in buckets:  # object-store memory is read-only and shared: copy into buffers we own
            self.receiver.apply(bucket.meta, self.receiver.buffer_for(bucket.meta, device).copy_(bucket.flat))
        self.receiver.finish()

    def state_checksums(self) -> dict[str, int]:
        return state_checksums(self.engine.model.state_dict().items())

    # ---- cluster.colocate: HF generate keeps no KV cache between calls, so what it can give back is the
    # allocator's cached blocks; its weights stay (the twin serves small models)
    def sleep(self, level: int) -> dict:
        if self.engine.device.type != "cuda":
            return {"slept": False, "reason": "HF generate on the CPU holds no device memory"}
        torch.cuda.empty_cache()
        return {"slept": True, "freed": "cached allocator blocks"}

    def wake_up(self, tags: list[str]) -> dict:
        return {"woke": list(tags)}
