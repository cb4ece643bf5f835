"""DPO-family and SFT losses on sequence log-probabilities (pure torch, no Ray).

Notation: for a pair (x, y_w, y_l), log π(y|x) is the sum of the per-token log-probs of the *continuation* tokens
only (the loss mask leaves out the prompt and any shared prefix — the step-masked form of SCDPO / Step-DPO /
SuperCorrect), r_w = log π_θ(y_w) − log π_ref(y_w), r_l likewise, h = r_w − r_l. Every loss is per pair; a batch
loss is the mean over pairs. Formulas and sources: docs/learner.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "ipo", "cdpo", "dpop", "rpo", "sft")

# Per-pair quantities summed over pairs (then divided by the global pair count) for the logged metrics, named as
# TRL's DPOTrainer logs them.
PAIR_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected", "nll/chosen")


@dataclass(frozen=True)
class LossParams:
    kind: str = "sigmoid"
    beta: float = 0.1
    label_smoothing: float = 0.0  # cdpo: probability that a preference label is flipped
    dpop_lambda: float = 50.0
    rpo_alpha: float = 1.0

    def __post_init__(self):
        if self.kind not in LOSS_TYPES:
            raise ValueError(f"unknown loss {self.kind!r}; expected one of {', '.join(LOSS_TYPES)}")

    @classmethod
    def from_algo(cls, algo) -> LossParams:
        return cls(kind=algo.loss, beta=algo.beta, label_smoothing=algo.label_smoothing,
                   dpop_lambda=algo.dpop_lambda, rpo_alpha=algo.rpo_alpha)

    @property
    def needs_reference(self) -> bool:
        return self.kind != "sft"


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) for each position, computed in float32 (or float64 if the logits are): [..., V], [...] -> [...]."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    flat = -F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    return flat.view(labels.shape)


def masked_sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard causal layout: logits[:, t] predicts input_ids[:, t+1]; `loss_mask[:, t]` marks tokens that carry loss.
    Returns (sum of log-probs over masked tokens, number of masked tokens) per row."""
    mask = loss_mask[:, 1:].bool()
    labels = input_ids[:, 1:].masked_fill(~mask, 0)
    per_token = token_logps(logits[:, :-1], labels).masked_fill(~mask, 0.0)
    return per_token.sum(-1), mask.sum(-1)


def segment_sums(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Sum of flat per-token `values` into `num_segments` sequences (the packed layout's per-sequence log-probs)."""
    return values.new_zeros(num_segments).index_add(0, segment, values)


def preference_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
                    ref_chosen: torch.Tensor | None, ref_rejected: torch.Tensor | None,
                    chosen_tokens: torch.Tensor, rejected_tokens: torch.Tensor, params: LossParams
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair loss [B] and per-pair detached metric values (keys of PAIR_METRICS) for one batch of pairs.

    `*_tokens` are the continuation lengths (for IPO's and RPO's length normalisation)."""
    beta = params.beta
    n_chosen = chosen_tokens.clamp(min=1).to(policy_chosen.dtype)
    n_rejected = rejected_tokens.clamp(min=1).to(policy_chosen.dtype)
    nll_chosen = -policy_chosen / n_chosen  # length-normalised NLL of the chosen continuation
    if params.needs_reference:
        r_w, r_l = policy_chosen - ref_chosen, policy_rejected - ref_rejected
        h = r_w - r_l
    kind = params.kind
    if kind == "sigmoid":
        loss = -F.logsigmoid(beta * h)
    elif kind == "cdpo":
        eps = params.label_smoothing
        loss = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    elif kind == "ipo":
        # IPO on per-token-averaged log-ratios, as TRL computes it (its authors confirmed the normalisation).
        loss = (r_w / n_chosen - r_l / n_rejected - 1 / (2 * beta)) ** 2
    elif kind == "dpop":
        # Smaug / DPO-Positive: penalise the chosen log-prob falling below the reference's, inside the sigmoid.
        penalty = torch.clamp(ref_chosen - policy_chosen, min=0)
        loss = -F.logsigmoid(beta * (h - params.dpop_lambda * penalty))
    elif kind == "rpo":
        loss = -F.logsigmoid(beta * h) + params.rpo_alpha * nll_chosen
    else:  # sft: NLL of the chosen continuation only
        loss = nll_chosen
    with torch.no_grad():
        if params.needs_reference:
            rw, rl = beta * r_w.detach(), beta * r_l.detach()
        else:
            rw = rl = torch.full_like(policy_chosen, float("nan"))
        metrics = {
            "loss": loss.detach(),
            "rewards/chosen": rw,
            "rewards/rejected": rl,
            "rewards/margins": rw - rl,
            "rewards/accuracies": (rw > rl).to(rw.dtype),
            "logps/chosen": policy_chosen.detach(),
            "logps/rejected": policy_rejected.detach(),
            "nll/chosen": nll_chosen.detach(),
        }
    return loss, metrics


def sft_token_nll(token_logps_: torch.Tensor) -> torch.Tensor:
    """Summed NLL of the response tokens; the caller divides by the *global* token count so the loss is the
    token-mean over the whole batch however it is split over ranks and micro-batches (TRL's SFT convention)."""
    return -token_logps_.sum()
