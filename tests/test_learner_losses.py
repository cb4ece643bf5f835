"""DPO-family and SFT losses: an independent float64 reference for every loss, and parity with TRL's DPOTrainer."""

from __future__ import annotations

import math

import pytest
import torch

from rayscale.algos.batching import collate, encode_pairs
from rayscale.algos.forward import TargetLogps, batch_inputs
from rayscale.algos.losses import LOSS_TYPES, LossParams, preference_loss, segment_sums
from rayscale.models import load_tokenizer
from rayscale.types import PreferencePair

PAIRS = [
    PreferencePair("a", "<|user|>3+4*2<|assistant|>", "8+3=11\n\\boxed{11}", "3+4=7\n7*2=14", shared_prefix="4*2=8\n",
                   rejected_ended=False),
    PreferencePair("b", "<|user|>9-2<|assistant|>", "9-2=7\n\\boxed{7}", "9-2=6\n\\boxed{6}"),
    PreferencePair("c", "<|user|>5*5-1<|assistant|>", "\\boxed{24}", "5*5=25\n25-1=23\n\\boxed{23}",
                   shared_prefix="5*5=25\n25-1=24\n"),
]
PARAMS = {"beta": 0.3, "label_smoothing": 0.2, "dpop_lambda": 5.0, "rpo_alpha": 0.7}


def _models(model_dir, dtype=torch.float64):
    """A policy and a *different* reference (perturbed), so log-ratios and every loss term are non-trivial."""
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").to(dtype)
    ref = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").to(dtype)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return policy, ref.requires_grad_(False)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _reference_loss(kind: str, pc, pr, rc, rr, nc, nr, beta, label_smoothing, dpop_lambda, rpo_alpha) -> float:
    """The papers' formulas on plain floats, written independently of rayscale.algos.losses."""
    h = (pc - rc) - (pr - rr)
    if kind == "sigmoid":
        return -_log_sigmoid(beta * h)
    if kind == "cdpo":
        return -(1 - label_smoothing) * _log_sigmoid(beta * h) - label_smoothing * _log_sigmoid(-beta * h)
    if kind == "ipo":
        return ((pc - rc) / nc - (pr - rr) / nr - 1 / (2 * beta)) ** 2
    if kind == "dpop":
        return -_log_sigmoid(beta * (h - dpop_lambda * max(0.0, rc - pc)))
    if kind == "rpo":
        return -_log_sigmoid(beta * h) - rpo_alpha * pc / nc
    return -pc / nc  # sft


def _separate_logps(model, encoded, side):
    """Per-sequence sums with full logits over each sequence on its own (no shared-prefix layout)."""
    out = []
    for e in encoded:
        cont = getattr(e, side)
        ids = torch.tensor([e.context + cont])
        logits = model(ids).logits[0, len(e.context) - 1:-1]
        out.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(cont)[:, None]).sum())
    return torch.stack(out)


@pytest.mark.parametrize("kind", LOSS_TYPES)
def test_every_loss_and_its_gradient_match_an_independent_float64_reference(kind, tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    policy, ref = _models(tiny_model_dir)
    encoded, _ = encode_pairs(tok, PAIRS, 128)
    params = LossParams(kind=kind, **PARAMS)

    b = collate(encoded, tok.pad_token_id)
    n = b.num_rows
    seq = segment_sums(TargetLogps(policy)(**batch_inputs(b)), b.target_seq, b.num_seqs)
    with torch.no_grad():
        rseq = segment_sums(TargetLogps(ref)(**batch_inputs(b)), b.target_seq, b.num_seqs)
    counts = b.seq_token_counts()
    loss, metrics = preference_loss(seq[:n], seq[n:], rseq[:n], rseq[n:], counts[:n], counts[n:], params)
    loss.mean().backward()
    ours = {name: p.grad.clone() for name, p in policy.named_parameters()}
    policy.zero_grad()

    pc, pr = _separate_logps(policy, encoded, "chosen"), _separate_logps(policy, encoded, "rejected")
    with torch.no_grad():
        rc, rr = _separate_logps(ref, encoded, "chosen"), _separate_logps(ref, encoded, "rejected")
    lengths = [(len(e.chosen), len(e.rejected)) for e in encoded]
    expected = [_reference_loss(kind, pc[i].item(), pr[i].item(), rc[i].item(), rr[i].item(), *lengths[i], **PARAMS)
                for i in range(n)]
    assert loss.tolist() == pytest.approx(expected, abs=1e-9)
    # Gradient of the same formulas through an independent autograd graph.
    h = (pc - rc) - (pr - rr)
    nc = torch.tensor([c for c, _ in lengths], dtype=torch.float64)
    nr = torch.tensor([r for _, r in lengths], dtype=torch.float64)
    ls = torch.nn.functional.logsigmoid
    beta, eps = PARAMS["beta"], PARAMS["label_smoothing"]
    graph = {
        "sigmoid": lambda: -ls(beta * h),
        "cdpo": lambda: -(1 - eps) * ls(beta * h) - eps * ls(-beta * h),
        "ipo": lambda: ((pc - rc) / nc - (pr - rr) / nr - 1 / (2 * beta)) ** 2,
        "dpop": lambda: -ls(beta * (h - PARAMS["dpop_lambda"] * torch.relu(rc - pc))),
        "rpo": lambda: -ls(beta * h) - PARAMS["rpo_alpha"] * pc / nc,
        "sft": lambda: -pc / nc,
    }[kind]()
    graph.mean().backward()
    # Not 1e-12: HF's Llama RMSNorm computes in float32 even in a float64 model, so its backward accumulates float32
    # sums whose rounding depends on how tokens are laid out (the forward values still agree to 1e-12).
    for name, p in policy.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, atol=1e-6, rtol=1e-5)
    if kind != "sft":
        assert metrics["rewards/chosen"].tolist() == pytest.approx((beta * (pc - rc)).tolist(), abs=1e-9)
        assert metrics["rewards/accuracies"].tolist() == [float(x > 0) for x in h.tolist()]


def test_shared_prefix_carries_no_loss(tiny_model_dir):
    """Changing the shared prefix's *loss* contribution is impossible: only continuation tokens are targets."""
    tok = load_tokenizer(tiny_model_dir)
    pair = PAIRS[2]
    (e,), _ = encode_pairs(tok, [pair], 128)
    b = collate([e], tok.pad_token_id)
    assert b.labels.numel() == len(e.chosen) + len(e.rejected)
    prefix_len = len(tok(pair.shared_prefix, add_special_tokens=False)["input_ids"])
    assert len(e.context) == len(tok(pair.prompt, add_special_tokens=False)["input_ids"]) + prefix_len
    assert int(b.pred_index.min()) == len(e.context) - 1


def test_unknown_loss_is_rejected():
    with pytest.raises(ValueError, match="unknown loss 'dpo'"):
        LossParams(kind="dpo")


# ----------------------------------------------------------------------------------------------- TRL parity
TRL_BETA = 0.1  # both trainers' default
def _trl_loss_and_grads(model_dir, pairs, loss_type, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tok = load_tokenizer(model_dir)
    policy, ref = _models(model_dir, torch.float32)
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=len(pairs), report_to="none", use_cpu=True,
                     bf16=False, activation_checkpointing=False, max_length=None, beta=TRL_BETA,
                     loss_type=[loss_type], disable_tqdm=True, save_strategy="no")
    data = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=data, processing_class=tok)
    inputs = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])
    policy.train()
    loss = trainer._compute_loss(policy, inputs, return_outputs=False)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in policy.named_parameters()}


def _our_loss_and_grads(model_dir, pairs, kind):
    tok = load_tokenizer(model_dir)
    policy, ref = _models(model_dir, torch.float32)
    encoded, _ = encode_pairs(tok, pairs, 4096)
    b = collate(encoded, tok.pad_token_id)
    n = b.num_rows
    seq = segment_sums(TargetLogps(policy.train())(**batch_inputs(b)), b.target_seq, b.num_seqs)
    with torch.no_grad():
        rseq = segment_sums(TargetLogps(ref)(**batch_inputs(b)), b.target_seq, b.num_seqs)
    counts = b.seq_token_counts()
    loss, _ = preference_loss(seq[:n], seq[n:], rseq[:n], rseq[n:], counts[:n], counts[n:],
                              LossParams(kind=kind, beta=TRL_BETA))
    loss = loss.mean()
    loss.backward()
    return loss.item(), {n_: p.grad.clone() for n_, p in policy.named_parameters()}


@pytest.mark.parametrize("kind", ["sigmoid", "ipo"])
def test_dpo_loss_and_gradients_match_trl_dpotrainer(kind, tiny_model_dir, tmp_path):
    """Same model, reference and pairs, float32. TRL has no shared prefix: its pairs are prompt + full responses.
    What remains is float32 summation order (TRL pads chosen and rejected as separate rows and scores every
    position in chunks; we score the shared-prefix rows at the target positions only): ~1e-7..1e-6 here."""
    pytest.importorskip("trl")
    pairs = [PreferencePair(p.prompt_id, p.prompt, p.shared_prefix + p.chosen, p.shared_prefix + p.rejected)
             for p in PAIRS]
    trl_loss, trl_grads = _trl_loss_and_grads(tiny_model_dir, pairs, kind, tmp_path)
    our_loss, our_grads = _our_loss_and_grads(tiny_model_dir, pairs, kind)
    # 1e-5 absolute for the sigmoid loss (~0.7); relative for IPO, whose loss is ~(1/2β)² = 25 and float32 carries
    # ~7 significant digits.
    scale = max(1.0, abs(trl_loss))
    assert abs(our_loss - trl_loss) < 1e-5 * scale
    worst = max((our_grads[n] - trl_grads[n]).abs().max().item() for n in trl_grads)
    assert worst < 1e-5 * scale, f"largest gradient difference vs TRL: {worst:.2e}"
    print(f"[parity {kind}] |loss diff| = {abs(our_loss - trl_loss):.2e}, max |grad diff| = {worst:.2e}")
