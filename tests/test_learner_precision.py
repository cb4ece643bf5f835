"""learner.precision=bf16-autocast computes the same DPO loss as fp32 up to bf16 rounding (pure: no process group)."""

from __future__ import annotations

import pytest
import torch

from rayscale.algos.batching import collate, encode_pairs
from rayscale.algos.forward import TargetLogps
from rayscale.algos.losses import LossParams, preference_loss
from rayscale.config import AlgoConfig, LearnerConfig
from rayscale.learner.engine import LearnerEngine
from rayscale.models import load_tokenizer
from rayscale.types import PreferencePair


def _pairs(n: int = 6) -> list[PreferencePair]:
    return [PreferencePair(str(i), f"<|user|>{i}*{i + 3}+{2 * i}=?<|assistant|>", shared_prefix=f"{i}*{i + 3}=",
                           chosen=f"{i * (i + 3)}\n{i * (i + 3)}+{2 * i}={i * (i + 3) + 2 * i}",
                           rejected=f"{i * (i + 3) + 1}\nso {i + 7}", rejected_ended=i % 2 == 0)
            for i in range(n)]


def _loss_and_grads(model_dir: str, precision: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The learner's own forward (LearnerEngine._sequence_logps) under `precision`, policy != reference."""
    from transformers import AutoModelForCausalLM

    engine = LearnerEngine(0, 1, model_dir, LearnerConfig(precision=precision), AlgoConfig(loss="sigmoid", beta=0.5))
    tok = load_tokenizer(model_dir)
    torch.manual_seed(0)
    policy = TargetLogps(AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa"))
    with torch.no_grad():  # move the policy away from the reference, so the loss is not log 2 at every precision
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ref = TargetLogps(AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa")).eval()
    batch = collate(encode_pairs(tok, _pairs(), 128)[0], tok.pad_token_id)
    with torch.no_grad():
        ref_seq = engine._sequence_logps(ref, batch)[0]
    seq, counts, n = engine._sequence_logps(policy, batch)
    assert seq.dtype == torch.float32  # log-probs are float32 at every precision
    loss, _ = preference_loss(seq[:n], seq[n:], ref_seq[:n], ref_seq[n:], counts[:n], counts[n:],
                              LossParams(beta=0.5))
    loss.mean().backward()
    return loss.detach(), [p.grad.detach().clone() for p in policy.parameters()]


def test_bf16_autocast_loss_and_gradients_match_fp32_within_bf16_rounding(tiny_model_dir):
    loss32, grads32 = _loss_and_grads(tiny_model_dir, "fp32")
    loss16, grads16 = _loss_and_grads(tiny_model_dir, "bf16-autocast")
    assert not torch.equal(loss32, loss16)  # the bf16 path really ran in bf16
    # bf16 keeps 8 bits of mantissa (relative rounding 2^-8 = 0.4%) per matmul
    torch.testing.assert_close(loss16, loss32, rtol=2e-2, atol=2e-2)
    flat32, flat16 = torch.cat([g.flatten() for g in grads32]), torch.cat([g.flatten() for g in grads16])
    assert torch.nn.functional.cosine_similarity(flat32, flat16, dim=0) > 0.99
    assert (flat16.norm() / flat32.norm()).item() == pytest.approx(1.0, abs=0.05)


def test_fp32_has_no_autocast():
    assert LearnerEngine(0, 1, "m", LearnerConfig(precision="fp32"), AlgoConfig()).autocast is None
    assert LearnerEngine(0, 1, "m", LearnerConfig(precision="bf16-autocast"), AlgoConfig()).autocast == torch.bfloat16


def test_length_bucketed_micro_batches_give_the_padded_batch_loss(tiny_model_dir):
    """The learner's micro-batches (length-sorted buckets, each padded only to its own longest row) score every pair
    as one batch padded to the longest row of all does: same per-pair loss, so the same mean loss."""
    from transformers import AutoModelForCausalLM

    from rayscale.algos.batching import micro_batches

    tok = load_tokenizer(tiny_model_dir)
    engine = LearnerEngine(0, 1, tiny_model_dir, LearnerConfig(precision="fp32"), AlgoConfig())
    policy = TargetLogps(AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")).eval()
    pairs = _pairs(7)
    pairs[3].chosen += "\n" + "1+1=2\n" * 6  # one long row: the single batch pads every other row to it
    encoded, _ = encode_pairs(tok, pairs, 256)
    key = {id(e): i for i, e in enumerate(encoded)}

    def per_pair(batches) -> dict[int, torch.Tensor]:
        out = {}
        with torch.no_grad():
            for rows in batches:
                b = collate(rows, tok.pad_token_id)
                seq, counts, n = engine._sequence_logps(policy, b)
                ref = 0.9 * seq  # a reference of the pair alone (not of its place in a batch): loss != log 2
                loss, _ = preference_loss(seq[:n], seq[n:], ref[:n], ref[n:], counts[:n], counts[n:], LossParams())
                out.update({key[id(r)]: loss[i] for i, r in enumerate(rows)})
        return out

    buckets = micro_batches(encoded, 2)
    assert len(buckets) == 4 and {len(r) for r in buckets} == {1, 2}
    padded, bucketed = per_pair([encoded]), per_pair(buckets)
    assert sorted(padded) == sorted(bucketed) == list(range(7))
    for i in range(7):
        torch.testing.assert_close(bucketed[i], padded[i], rtol=1e-5, atol=1e-5)
