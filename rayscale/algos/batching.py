"""Tokenization and collation of learner batches (pure: no Ray, no DeepSpeed).

Texts cross actor boundaries; each learner rank tokenizes its own shard here. Every piece (prompt, shared prefix,
continuation) is tokenized on its own and the ids are concatenated, so the boundary between "context, no loss" and
"continuation, loss" is exact whatever the tokenizer does at piece boundaries.

Collation uses a *shared-prefix* layout: one row per preference pair holding `context | chosen | rejected`, where
the rejected tokens attend to the context but not to the chosen tokens and their positions restart right after the
context. One forward pass then scores both responses without computing the (prompt + correct-steps) context twice,
which is most of a pair's tokens in step-level DPO. SFT rows are the same layout with no rejected segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rayscale.types import PreferencePair, SFTExample

# Segment ids of the shared-prefix layout.
CONTEXT, CHOSEN, REJECTED, PAD = 0, 1, 2, 3


@dataclass
class EncodedPair:
    context: list[int]  # prompt + shared prefix: carries no loss
    chosen: list[int]  # continuation (+ EOS when it ended)
    rejected: list[int]

    @property
    def pair_tokens(self) -> int:
        """Tokens of the two full sequences, context counted twice (the usual DPO throughput unit)."""
        return 2 * len(self.context) + len(self.chosen) + len(self.rejected)

    @property
    def row_length(self) -> int:
        return len(self.context) + len(self.chosen) + len(self.rejected)


@dataclass
class TruncationCounts:
    context: int = 0  # rows whose context alone left no room, cut from the left
    chosen: int = 0  # continuations cut from the right (their EOS with them)
    rejected: int = 0

    def as_metrics(self) -> dict[str, float]:
        return {"truncated/context": self.context, "truncated/chosen": self.chosen,
                "truncated/rejected": self.rejected}


@dataclass
class PackedBatch:
    """One micro-batch in the shared-prefix layout; every tensor on CPU until `.to(device)`.

    Targets are the tokens that carry loss, flattened over the batch: target k is `labels[k]`, predicted by the
    hidden state at flat position `pred_index[k]` (= row * seq_len + column) and belongs to sequence `target_seq[k]`
    (pairs: chosen of row i is sequence i, rejected of row i is sequence num_rows + i; SFT: row i is sequence i).
    """

    input_ids: torch.Tensor  # [rows, T] long
    position_ids: torch.Tensor  # [rows, T] long
    segments: torch.Tensor  # [rows, T] long (CONTEXT / CHOSEN / REJECTED / PAD)
    pred_index: torch.Tensor  # [N] long
    labels: torch.Tensor  # [N] long
    target_seq: torch.Tensor  # [N] long
    num_rows: int
    num_seqs: int
    pair_tokens: int = 0  # throughput accounting, see EncodedPair.pair_tokens
    extra: dict[str, Any] = field(default_factory=dict)

    def to(self, device: str | torch.device) -> PackedBatch:
        moved = {k: getattr(self, k).to(device, non_blocking=True)
                 for k in ("input_ids", "position_ids", "segments", "pred_index", "labels", "target_seq")}
        return PackedBatch(**moved, num_rows=self.num_rows, num_seqs=self.num_seqs, pair_tokens=self.pair_tokens,
                           extra=self.extra)

    def seq_token_counts(self) -> torch.Tensor:
        return torch.bincount(self.target_seq, minlength=self.num_seqs)


# ----------------------------------------------------------------------------------------------- validation
def validate_pairs(pairs: Any, num_ranks: int) -> None:
    """Reject a bad DPO batch with one clear message, before any rank (and any collective) sees it."""
    _validate_batch(pairs, num_ranks, PreferencePair, "pairs")
    for i, p in enumerate(pairs):
        for name in ("prompt", "shared_prefix", "chosen", "rejected"):
            if not isinstance(getattr(p, name), str):
                raise TypeError(f"pair {i} ({p.prompt_id!r}): {name} must be str, got {type(getattr(p, name)).__name__}")
        if not p.prompt:
            raise ValueError(f"pair {i} ({p.prompt_id!r}): empty prompt; the first response token needs context")
        for side in ("chosen", "rejected"):
            if not getattr(p, side) and not getattr(p, f"{side}_ended"):
                raise ValueError(f"pair {i} ({p.prompt_id!r}): empty {side} continuation that did not end "
                                 f"(no token would carry loss)")


def validate_sft(examples: Any, num_ranks: int) -> None:
    _validate_batch(examples, num_ranks, SFTExample, "examples")
    for i, ex in enumerate(examples):
        if not isinstance(ex.prompt, str) or not isinstance(ex.response, str):
            raise TypeError(f"example {i} ({ex.prompt_id!r}): prompt and response must be str")
        if not ex.prompt:
            raise ValueError(f"example {i} ({ex.prompt_id!r}): empty prompt")


def _validate_batch(batch: Any, num_ranks: int, record: type, what: str) -> None:
    if not isinstance(batch, (list, tuple)):
        raise TypeError(f"expected a list of {record.__name__}, got {type(batch).__name__}")
    if not batch:
        raise ValueError(f"empty batch: no {what} to train on")
    bad = next((i for i, x in enumerate(batch) if not isinstance(x, record)), None)
    if bad is not None:
        raise TypeError(f"{what}[{bad}] is a {type(batch[bad]).__name__}, expected {record.__name__}")
    if len(batch) % num_ranks:
        raise ValueError(f"a batch of {len(batch)} {what} does not split evenly over {num_ranks} learner ranks; "
                         f"send a multiple of {num_ranks} (every rank must run the same number of micro-batches, "
                         f"or the ZeRO collectives of the longer ranks would wait forever)")


# ----------------------------------------------------------------------------------------------- sharding
def shard_evenly(items: Sequence, num_ranks: int, size_of=len) -> list[list]:
    """Equal-count shards balanced by size: sort by size, deal in a snake (0,1,..,n-1,n-1,..,0) so every rank gets a
    similar token load. Deterministic; items keep no particular order inside a shard."""
    order = sorted(range(len(items)), key=lambda i: (-size_of(items[i]), i))
    shards: list[list] = [[] for _ in range(num_ranks)]
    for j, i in enumerate(order):
        lap, pos = divmod(j, num_ranks)
        shards[pos if lap % 2 == 0 else num_ranks - 1 - pos].append(items[i])
    return shards


def pair_text_size(p: PreferencePair) -> int:
    return 2 * (len(p.prompt) + len(p.shared_prefix)) + len(p.chosen) + len(p.rejected)


def sft_text_size(ex: SFTExample) -> int:
    return len(ex.prompt) + len(ex.response)


# ----------------------------------------------------------------------------------------------- tokenization
def _ids(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def _bos(tokenizer) -> list[int]:
    """The BOS id the tokenizer's own post-processor would put in front of a prompt, if any."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [bos] if probe and probe[0] == bos else []


def _encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Prompt ids with the tokenizer's BOS, unless the rendered prompt already starts with the BOS text."""
    bos = _bos(tokenizer)
    bos_text = tokenizer.bos_token or ""
    return [(bos if bos and not (bos_text and text.startswith(bos_text)) else []) + ids
            for text, ids in zip(prompts, _ids(tokenizer, prompts))]


def _fit(context: list[int], conts: list[list[int]], max_len: int) -> tuple[list[int], list[list[int]], list[bool], bool]:
    """Cut each context+continuation to max_len: continuations from the right; a context that leaves no room for a
    single continuation token is cut from the left (its end, nearest the response, matters most)."""
    ctx_cut = len(context) > max_len - 1
    if ctx_cut:
        context = context[len(context) - (max_len - 1):]
    room = max_len - len(context)
    return context, [c[:room] for c in conts], [len(c) > room for c in conts], ctx_cut


def encode_pairs(tokenizer, pairs: Sequence[PreferencePair], max_seq_len: int
                 ) -> tuple[list[EncodedPair], TruncationCounts]:
    eos = tokenizer.eos_token_id
    prompts = _encode_prompts(tokenizer, [p.prompt for p in pairs])
    prefixes = _ids(tokenizer, [p.shared_prefix for p in pairs])
    chosen = _ids(tokenizer, [p.chosen for p in pairs])
    rejected = _ids(tokenizer, [p.rejected for p in pairs])
    out, counts = [], TruncationCounts()
    for i, p in enumerate(pairs):
        c = chosen[i] + ([eos] if p.chosen_ended else [])
        r = rejected[i] + ([eos] if p.rejected_ended else [])
        if not c or not r:
            side = "chosen" if not c else "rejected"
            raise ValueError(f"pair {i} ({p.prompt_id!r}): the {side} continuation tokenizes to no tokens")
        ctx, (c, r), (c_cut, r_cut), ctx_cut = _fit(prompts[i] + prefixes[i], [c, r], max_seq_len)
        counts.context += ctx_cut
        counts.chosen += c_cut
        counts.rejected += r_cut
        out.append(EncodedPair(ctx, c, r))
    return out, counts


def encode_sft(tokenizer, examples: Sequence[SFTExample], max_seq_len: int
               ) -> tuple[list[EncodedPair], TruncationCounts]:
    """SFT examples as rows with an empty rejected segment (response + EOS carries the loss)."""
    eos = tokenizer.eos_token_id
    prompts = _encode_prompts(tokenizer, [ex.prompt for ex in examples])
    responses = _ids(tokenizer, [ex.response for ex in examples])
    out, counts = [], TruncationCounts()
    for i in range(len(examples)):
        ctx, (resp,), (cut,), ctx_cut = _fit(prompts[i], [responses[i] + [eos]], max_seq_len)
        counts.context += ctx_cut
        counts.chosen += cut
        out.append(EncodedPair(ctx, resp, []))
    return out, counts


# ----------------------------------------------------------------------------------------------- collation
def micro_batches(encoded: Sequence[EncodedPair], micro_batch_size: int) -> list[list[EncodedPair]]:
    """Length-sorted micro-batches (longest first, so memory peaks on the first one): little padding per row."""
    ordered = sorted(encoded, key=lambda e: -e.row_length)
    return [ordered[i:i + micro_batch_size] for i in range(0, len(ordered), micro_batch_size)]


def collate(rows: Sequence[EncodedPair], pad_id: int, with_rejected: bool = True) -> PackedBatch:
    """Right-padded shared-prefix rows plus the flat target index (see PackedBatch)."""
    n, width = len(rows), max(e.row_length for e in rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    segments = torch.full((n, width), PAD, dtype=torch.long)
    pred, labels, seq = [], [], []
    for i, e in enumerate(rows):
        p, c, r = len(e.context), len(e.chosen), len(e.rejected)
        input_ids[i, :p + c + r] = torch.tensor(e.context + e.chosen + e.rejected)
        position_ids[i, :p + c] = torch.arange(p + c)
        position_ids[i, p + c:p + c + r] = torch.arange(p, p + r)
        segments[i, :p] = CONTEXT
        segments[i, p:p + c] = CHOSEN
        segments[i, p + c:p + c + r] = REJECTED
        base = i * width
        # Token t of a continuation is predicted by the position before it; the first by the last context token.
        pred += [base + p - 1 + t for t in range(c)]
        labels += e.chosen
        seq += [i] * c
        if r:
            pred += [base + p - 1] + [base + p + c + t for t in range(r - 1)]
            labels += e.rejected
            seq += [n + i] * r
    return PackedBatch(
        input_ids=input_ids, position_ids=position_ids, segments=segments,
        pred_index=torch.tensor(pred, dtype=torch.long), labels=torch.tensor(labels, dtype=torch.long),
        target_seq=torch.tensor(seq, dtype=torch.long), num_rows=n, num_seqs=2 * n if with_rejected else n,
        pair_tokens=sum(e.pair_tokens if with_rejected else len(e.context) + len(e.chosen) for e in rows),
    )


def shared_prefix_mask(segments: torch.Tensor, additive_dtype: torch.dtype | None = None) -> torch.Tensor:
    """[rows, 1, T, T] attention mask of the shared-prefix layout: causal, and a query sees context keys plus keys of
    its own segment. Every query sees itself, so padded rows never softmax over nothing (no NaNs).

    Boolean (True = attend) for SDPA; with `additive_dtype`, the 0 / -inf float form eager attention adds."""
    t = segments.shape[1]
    idx = torch.arange(t, device=segments.device)
    causal = idx[None, :] <= idx[:, None]  # [q, k]
    seg_q, seg_k = segments[:, :, None], segments[:, None, :]
    allowed = causal[None] & ((seg_k == CONTEXT) | (seg_k == seg_q))
    allowed = allowed[:, None]
    if additive_dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=additive_dtype, device=segments.device).masked_fill(
        ~allowed, torch.finfo(additive_dtype).min)
