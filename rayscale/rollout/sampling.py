"""Per-row seeded sampling for batched `generate`, and stop strings.

Hugging Face `generate` samples a whole batch from one global RNG, so a request's samples would depend on what it
happened to be batched with. Here every row carries its own 63-bit seed; at each step it draws one uniform from a
stateless counter-based hash of (seed, step) and picks its token by inverse CDF. A row's sample is then the same
whatever the batch or the batch size, like vLLM's per-request `seed`. The sampler runs as the last logits
processor and returns a one-hot mask, so `generate`'s own greedy step takes the drawn token. One uniform per row
and step (not one per vocabulary entry) keeps it as cheap as `generate`'s own multinomial.
"""

from __future__ import annotations

import hashlib
import math

import torch
from transformers import LogitsProcessor, TopKLogitsWarper, TopPLogitsWarper

_M32 = 0xFFFFFFFF


def row_seed(seed: int, sample_index: int) -> int:
    """A 63-bit seed for sample `sample_index` of a request seeded with `seed`."""
    digest = hashlib.blake2b(f"{seed}:{sample_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _mix32(x):
    """lowbias32 integer hash, on Python ints or int64 tensors holding values in [0, 2**32) (products may wrap
    in int64; the low 32 bits kept are exact either way)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def row_keys(seeds: torch.Tensor) -> torch.Tensor:
    """Per-row hash keys (int64 in [0, 2**32)) from 63-bit seeds; computed once per batch."""
    return _mix32((seeds & _M32) ^ _mix32((seeds >> 32) & _M32 ^ 0x9E3779B9))


def row_uniforms(keys: torch.Tensor, step: int) -> torch.Tensor:
    """One float64 uniform in (0, 1) per row, a pure function of (key, step)."""
    h = _mix32(keys ^ _mix32((step & _M32) ^ 0x85EBCA6B))
    return (h.to(torch.float64) + 0.5) * (1.0 / 2**32)


class RowSampler(LogitsProcessor):
    """Draws one token per row: greedy where the row's temperature is 0, else a seeded inverse-CDF draw after
    temperature, top-k and top-p. Records the raw-model log-prob of each drawn token when asked."""

    def __init__(self, seeds: torch.Tensor, temperatures: torch.Tensor, prompt_len: int, top_k: int = 0,
                 top_p: float = 1.0, record_logprobs: bool = False):
        self.keys = row_keys(seeds)
        self.prompt_len = prompt_len
        self.sampled = temperatures > 0
        self.any_sampled, self.all_sampled = bool(self.sampled.any()), bool(self.sampled.all())
        t = temperatures.clamp_min(1e-6)[:, None]
        self.inv_temperature = None if bool((temperatures == 1).all()) else 1.0 / t
        self.warpers = ([TopKLogitsWarper(top_k)] if top_k > 0 else []) + (
            [TopPLogitsWarper(top_p)] if top_p < 1.0 else [])
        self.logprobs: list[torch.Tensor] | None = [] if record_logprobs else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        raw = scores.float()
        choice = None if self.all_sampled else raw.argmax(-1)
        if self.any_sampled:
            x = raw if self.inv_temperature is None else raw * self.inv_temperature
            for warper in self.warpers:
                x = warper(input_ids, x)
            cdf = torch.softmax(x, -1, dtype=torch.float64).cumsum_(-1)
            u = row_uniforms(self.keys, input_ids.shape[1] - self.prompt_len)[:, None] * cdf[:, -1:]
            drawn = torch.searchsorted(cdf, u)[:, 0].clamp_(max=raw.shape[-1] - 1)
            choice = drawn if choice is None else torch.where(self.sampled, drawn, choice)
        if self.logprobs is not None:
            self.logprobs.append(torch.log_softmax(raw, -1).gather(-1, choice[:, None])[:, 0])
        forced = torch.full_like(scores, -math.inf)
        return forced.scatter_(-1, choice[:, None], 0.0)


def truncate_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Cut `text` before the earliest stop string; (text, whether one was found)."""
    cut = min((i for s in stops if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class StopOnStrings:
    """Stopping criterion: a row is done once a stop string appears in its *generated* text (as in vLLM, the prompt
    and the continued prefix do not count). Only the last few generated tokens are decoded per step."""

    def __init__(self, tokenizer, stops: list[str], prompt_len: int):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_len = prompt_len
        self.window = max(len(s) for s in self.stops) + 4  # every token decodes to at least one character

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        tails = input_ids[:, self.prompt_len:][:, -self.window:].tolist()
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)
