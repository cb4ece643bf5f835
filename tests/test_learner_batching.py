"""Tokenization, truncation, sharding and the shared-prefix layout (pure, no Ray)."""

from __future__ import annotations

import pytest
import torch

from rayscale.algos.batching import (
    CHOSEN,
    CONTEXT,
    PAD,
    REJECTED,
    collate,
    encode_pairs,
    encode_sft,
    micro_batches,
    shard_evenly,
    shared_prefix_mask,
    validate_pairs,
    validate_sft,
)
from rayscale.models import load_tokenizer
from rayscale.types import PreferencePair, SFTExample


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_pieces_are_tokenized_separately_and_eos_follows_ended_responses(tok):
    pair = PreferencePair("p", "<|user|>1+2<|assistant|>", chosen="=3\n", rejected="=4", shared_prefix="1+2",
                          chosen_ended=True, rejected_ended=False)
    (enc,), counts = encode_pairs(tok, [pair], max_seq_len=64)
    assert enc.context == _ids(tok, pair.prompt) + _ids(tok, "1+2")
    assert enc.chosen == _ids(tok, "=3\n") + [tok.eos_token_id]
    assert enc.rejected == _ids(tok, "=4")  # cut off at max_new_tokens: no EOS to learn
    assert (counts.context, counts.chosen, counts.rejected) == (0, 0, 0)


def test_truncation_cuts_responses_from_the_right_and_counts_them(tok):
    pair = PreferencePair("p", "<|user|>q<|assistant|>", chosen="a" * 20, rejected="b" * 3)  # context: 3 tokens
    (enc,), counts = encode_pairs(tok, [pair], max_seq_len=10)
    assert len(enc.context) == 3 and enc.chosen == _ids(tok, "a" * 7)
    assert enc.rejected == _ids(tok, "bbb") + [tok.eos_token_id]
    assert (counts.context, counts.chosen, counts.rejected) == (0, 1, 0)


def test_a_context_longer_than_max_len_keeps_its_end_and_one_response_token(tok):
    pair = PreferencePair("p", "<|user|>" + "x" * 30 + "<|assistant|>", chosen="yz", rejected="w")
    (enc,), counts = encode_pairs(tok, [pair], max_seq_len=8)
    assert len(enc.context) == 7 and enc.context[-1] == tok.convert_tokens_to_ids("<|assistant|>")
    assert enc.chosen == _ids(tok, "y") and enc.rejected == _ids(tok, "w")
    assert counts.context == 1 and counts.chosen == 1 and counts.rejected == 1


def test_sft_rows_put_the_loss_on_response_and_eos(tok):
    (enc,), _ = encode_sft(tok, [SFTExample("<|user|>1+1<|assistant|>", "2")], max_seq_len=64)
    assert enc.chosen == _ids(tok, "2") + [tok.eos_token_id] and enc.rejected == []


def test_collate_layout_positions_and_targets(tok):
    pair = PreferencePair("p", "ab", chosen="cd", rejected="e", chosen_ended=False, rejected_ended=False)
    encoded, _ = encode_pairs(tok, [pair, PreferencePair("q", "a", "b", "c", chosen_ended=False,
                                                         rejected_ended=False)], 64)
    b = collate(encoded, tok.pad_token_id)
    assert b.input_ids.shape == (2, 5)
    assert b.segments[0].tolist() == [CONTEXT, CONTEXT, CHOSEN, CHOSEN, REJECTED]
    assert b.position_ids[0].tolist() == [0, 1, 2, 3, 2]  # rejected restarts right after the context
    assert b.segments[1].tolist() == [CONTEXT, CHOSEN, REJECTED, PAD, PAD]
    # chosen "c","d" predicted from positions 1,2; rejected "e" from the last context token (1), not from "d"
    assert b.pred_index.tolist()[:3] == [1, 2, 1]
    assert b.labels.tolist()[:3] == _ids(tok, "cde")
    assert b.target_seq.tolist() == [0, 0, 2, 1, 3]
    assert b.seq_token_counts().tolist() == [2, 1, 1, 1]
    assert b.pair_tokens == (2 * 2 + 2 + 1) + (2 * 1 + 1 + 1)


def test_mask_hides_chosen_from_rejected_and_every_row_sees_itself():
    seg = torch.tensor([[CONTEXT, CONTEXT, CHOSEN, CHOSEN, REJECTED, PAD]])
    m = shared_prefix_mask(seg)[0, 0]
    assert m[4].tolist() == [True, True, False, False, True, False]  # rejected: context + itself
    assert m[3].tolist() == [True, True, True, True, False, False]
    assert m[1].tolist() == [True, True, False, False, False, False]  # causal
    assert bool(m.diagonal().all())
    additive = shared_prefix_mask(seg, torch.float32)[0, 0]
    assert additive[4, 2] == torch.finfo(torch.float32).min and additive[4, 0] == 0


def test_shared_layout_scores_match_separate_sequences_in_float64(tok, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from rayscale.algos.forward import TargetLogps, batch_inputs
    from rayscale.algos.losses import masked_sequence_logps, segment_sums

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").double()
    pairs = [PreferencePair("a", "<|user|>1+2*3<|assistant|>", "2*3=6\n1+6=7", "2*3=5", shared_prefix="2*3=6\n",
                            rejected_ended=False),
             PreferencePair("b", "<|user|>4*5<|assistant|>", "20", "4*5=21 and then more")]
    encoded, _ = encode_pairs(tok, pairs, 64)
    b = collate(encoded, tok.pad_token_id)
    packed = segment_sums(TargetLogps(model)(**batch_inputs(b)), b.target_seq, b.num_seqs)
    separate = []
    for side in ("chosen", "rejected"):
        for e in encoded:
            ids = torch.tensor([e.context + getattr(e, side)])
            mask = torch.tensor([[0] * len(e.context) + [1] * len(getattr(e, side))])
            separate.append(masked_sequence_logps(model(ids).logits, ids, mask)[0].item())
    assert packed.tolist() == pytest.approx(separate, abs=1e-10)


def test_shard_evenly_balances_sizes_and_keeps_every_item():
    items = list(range(1, 13))
    shards = shard_evenly(items, 3, size_of=lambda x: x)
    assert sorted(x for s in shards for x in s) == items
    assert [len(s) for s in shards] == [4, 4, 4]
    assert max(map(sum, shards)) - min(map(sum, shards)) <= 2


def test_micro_batches_are_length_sorted_longest_first(tok):
    pairs = [PreferencePair(str(i), "q" * (i + 1), "a", "b") for i in range(5)]
    encoded, _ = encode_pairs(tok, pairs, 64)
    mbs = micro_batches(encoded, 2)
    assert [len(m) for m in mbs] == [2, 2, 1]
    lengths = [e.row_length for m in mbs for e in m]
    assert lengths == sorted(lengths, reverse=True)


@pytest.mark.parametrize("batch, error, match", [
    ([], ValueError, "empty batch"),
    ("not a list", TypeError, "expected a list"),
    ([PreferencePair("a", "q", "c", "r")] * 3, ValueError, "does not split evenly over 2"),
    ([PreferencePair("a", "q", "c", "r"), SFTExample("q", "r")], TypeError, r"pairs\[1\] is a SFTExample"),
    ([PreferencePair("a", "", "c", "r")] * 2, ValueError, "empty prompt"),
    ([PreferencePair("a", "q", "", "r", chosen_ended=False)] * 2, ValueError, "empty chosen"),
    ([PreferencePair("a", "q", None, "r")] * 2, TypeError, "chosen must be str"),
])
def test_bad_dpo_batches_are_clear_errors(batch, error, match):
    with pytest.raises(error, match=match):
        validate_pairs(batch, num_ranks=2)


def test_bad_sft_batches_are_clear_errors():
    with pytest.raises(ValueError, match="empty batch"):
        validate_sft([], 1)
    with pytest.raises(TypeError, match="expected SFTExample"):
        validate_sft([PreferencePair("a", "q", "c", "r")], 1)
    validate_sft([SFTExample("q", "")], 1)  # an empty response still teaches EOS
