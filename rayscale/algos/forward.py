"""One forward pass over a shared-prefix batch, scoring only the tokens that carry loss (pure torch).

The wrapper is the module DeepSpeed wraps (so ZeRO-3's gather hooks see one root forward); the Hugging Face model
stays reachable as `.model`, and its parameter names are the HF `state_dict()` names behind the `model.` prefix.
"""

from __future__ import annotations

import torch
from torch import nn

from rayscale.algos.batching import PackedBatch, shared_prefix_mask
from rayscale.algos.losses import token_logps

SUPPORTED_ATTENTION = ("sdpa", "eager")


class TargetLogps(nn.Module):
    """forward(batch tensors) -> log-prob of each target token, [N], float32.

    Runs the backbone once over `context | chosen | rejected` rows with the shared-prefix mask, then projects through
    the LM head only at the N predicting positions — never the full [rows, T, vocab] logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        attn = getattr(model.config, "_attn_implementation", None)
        if attn not in SUPPORTED_ATTENTION:
            raise ValueError(f"the learner's shared-prefix mask needs attn_implementation in {SUPPORTED_ATTENTION}, "
                             f"got {attn!r}; load the model with attn_implementation='sdpa'")
        self.model = model
        self._additive_mask = attn == "eager"
        text_config = model.config.get_text_config()
        self._softcap = getattr(text_config, "final_logit_softcapping", None)
        self._logit_scale = getattr(text_config, "logit_scale", None)

    def forward(self, input_ids, position_ids, segments, pred_index, labels) -> torch.Tensor:
        dtype = self.model.get_input_embeddings().weight.dtype
        mask = shared_prefix_mask(segments, dtype if self._additive_mask else None)
        hidden = self.model.base_model(input_ids=input_ids, position_ids=position_ids, attention_mask=mask,
                                       use_cache=False).last_hidden_state
        hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, pred_index)
        logits = self.model.get_output_embeddings()(hidden)
        if self._logit_scale is not None:
            logits = logits * self._logit_scale
        if self._softcap is not None:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return token_logps(logits, labels)


def batch_inputs(batch: PackedBatch) -> dict[str, torch.Tensor]:
    return {"input_ids": batch.input_ids, "position_ids": batch.position_ids, "segments": batch.segments,
            "pred_index": batch.pred_index, "labels": batch.labels}


def disable_dropout(model: nn.Module) -> None:
    """DPO compares two forwards of the same text; dropout noise would bias the log-ratios (TRL does the same)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
