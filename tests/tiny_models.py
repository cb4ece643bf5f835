"""Tiny models whose greedy output says something: a freshly initialised model with tied embeddings predicts its
last input token again and again, so a comparison of two engines' greedy outputs would compare runs of one token.
Scaling the transformer layers' matrices up makes each prompt's continuation a distinct string of characters."""

from __future__ import annotations

from pathlib import Path

import torch

from rayscale.config import TinyModelConfig

LAYER_SCALE = 16.0


def diverse_tiny_model(out_dir: str | Path, seed: int) -> str:
    from rayscale.models import build_char_tokenizer, build_tiny_model

    tok = build_char_tokenizer()
    # head_dim 32: within vLLM's CPU attention kernels
    cfg = TinyModelConfig(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=256, seed=seed)
    model = build_tiny_model(cfg, tok)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".layers." in name and p.ndim == 2:
                p.mul_(LAYER_SCALE)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return str(out_dir)
