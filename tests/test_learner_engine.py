"""Per-rank pieces that need no process group: the precompute reference cache."""

from __future__ import annotations

import torch

from rayscale.algos.batching import collate, encode_pairs
from rayscale.algos.forward import TargetLogps
from rayscale.config import AlgoConfig, LearnerConfig
from rayscale.learner.engine import LearnerEngine
from rayscale.models import load_tokenizer
from rayscale.types import PreferencePair


def test_precompute_scores_a_batch_once_while_the_same_pairs_come_back(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(tiny_model_dir)
    engine = LearnerEngine(0, 1, tiny_model_dir, LearnerConfig(ref_mode="precompute"), AlgoConfig())
    engine._comm_device = torch.device("cpu")
    engine.ref = TargetLogps(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval())
    calls = []
    engine.ref.register_forward_hook(lambda *_: calls.append(1))

    def batches(seed):
        pairs = [PreferencePair(str(i), f"<|user|>{seed}+{i}<|assistant|>", f"{seed + i}", f"{seed - i}")
                 for i in range(4)]
        return [collate(encode_pairs(tok, pairs[j:j + 2], 64)[0], tok.pad_token_id) for j in (0, 2)]

    first = engine._reference_logps(batches(1))
    assert len(calls) == 2
    again = engine._reference_logps(batches(1))  # updates_per_iteration > 1: same pairs, no reference forward
    assert len(calls) == 2
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b)
    engine._reference_logps(batches(2))  # new pairs: scored, and the cache now holds only them
    assert len(calls) == 4
    engine._reference_logps(batches(1))
    assert len(calls) == 6
