"""Per-row seeded sampling for batched `generate`, and stop-string truncation.

Hugging Face `generate` samples a whole batch from one global RNG, so a request's samples would depend on what it
happened to be batched with. Here every row carries its own 63-bit seed and draws its noise from a stateless
counter-based hash of (seed, step, token): a row's sample is the same whatever the batch, the batch size or the
device, like vLLM's per-request `seed`. Sampling is Gumbel-max (argmax of log p + Gumbel noise is an exact draw
from p), run as the last logits processor; it returns a one-hot mask, so `generate`'s own greedy step takes the
drawn token.
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


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 integer hash on int64 tensors holding values in [0, 2**32); products wrap, low 32 bits are kept."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def uniform_noise(seeds: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """(rows, vocab) float64 uniforms in (0, 1), a pure function of (seed, step, token index)."""
    lo, hi = seeds & _M32, (seeds >> 32) & _M32
    row = _mix32(lo ^ _mix32(hi ^ 0x9E3779B9))
    row_step = _mix32(row ^ _mix32(torch.full_like(row, step & _M32) ^ 0x85EBCA6B))
    tokens = _mix32(torch.arange(vocab, device=seeds.device, dtype=torch.int64) ^ 0xC2B2AE35)
    h = _mix32(row_step[:, None] ^ tokens[None, :])
    return (h.to(torch.float64) + 0.5) * (1.0 / 2**32)


class RowSampler(LogitsProcessor):
    """Draws one token per row: greedy where the row's temperature is 0, else seeded Gumbel-max after
    temperature, top-k and top-p. Records the raw-model log-prob of each drawn token when asked."""

    def __init__(self, seeds: torch.Tensor, temperatures: torch.Tensor, prompt_len: int, top_k: int = 0,
                 top_p: float = 1.0, record_logprobs: bool = False):
        self.seeds = seeds
        self.temperatures = temperatures
        self.prompt_len = prompt_len
        self.warpers = ([TopKLogitsWarper(top_k)] if top_k > 0 else []) + (
            [TopPLogitsWarper(top_p)] if top_p < 1.0 else [])
        self.logprobs: list[torch.Tensor] | None = [] if record_logprobs else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        raw = scores.float()
        step = input_ids.shape[1] - self.prompt_len
        sampled = self.temperatures > 0
        choice = raw.argmax(-1)
        if bool(sampled.any()):
            warped = raw / self.temperatures.clamp_min(1e-6)[:, None]
            for warper in self.warpers:
                warped = warper(input_ids, warped)
            gumbel = -torch.log(-torch.log(uniform_noise(self.seeds, step, raw.shape[-1]))).to(raw.dtype)
            choice = torch.where(sampled, (torch.log_softmax(warped, -1) + gumbel).argmax(-1), choice)
        if self.logprobs is not None:
            self.logprobs.append(torch.log_softmax(raw, -1).gather(-1, choice[:, None])[:, 0])
        forced = torch.full_like(scores, -math.inf)
        forced.scatter_(-1, choice[:, None], 0.0)
        return forced


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
