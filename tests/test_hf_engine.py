"""The HF generation core without Ray: batching, seeds, n samples, stops, limits, prefixes, log-probs."""

from __future__ import annotations

import pytest
import torch

from rayscale.config import RolloutConfig, TinyModelConfig
from rayscale.rollout.hf_engine import HFEngine, _Row
from rayscale.rollout.sampling import RowSampler, row_keys, row_uniforms, truncate_at_stop
from rayscale.types import RolloutRequest

P1 = "<|user|>3+4*2<|assistant|>"
P2 = "<|user|>a much longer question, 12-5?<|assistant|>"


@pytest.fixture(scope="module")
def engine_parts(tmp_path_factory):
    from rayscale.models import load_model, load_tokenizer, make_tiny_model

    d = make_tiny_model(tmp_path_factory.mktemp("hf") / "m",
                        TinyModelConfig(hidden_size=64, num_layers=2, intermediate_size=128, seed=5))
    return load_model(str(d), "float32"), load_tokenizer(str(d))


def _engine(parts, **cfg) -> HFEngine:
    model, tok = parts
    return HFEngine(model, tok, RolloutConfig(**{"max_new_tokens": 10, **cfg}))


def test_n_samples_per_request_in_request_order(engine_parts):
    eng = _engine(engine_parts, batch_size=3)
    out = eng.generate([RolloutRequest("a", P1, n=2), RolloutRequest("b", P2, n=3)], policy_version=7)
    assert [[s.prompt_id for s in ss] for ss in out] == [["a", "a"], ["b", "b", "b"]]
    assert all(s.policy_version == 7 and s.prompt in (P1, P2) for ss in out for s in ss)
    assert len({s.text for s in out[1]}) > 1  # the n samples differ


def test_a_seeded_request_samples_the_same_whatever_it_is_batched_with(engine_parts):
    req = RolloutRequest("a", P1, n=3, seed=11)
    alone = _engine(engine_parts, batch_size=1).generate([req])[0]
    crowded = _engine(engine_parts, batch_size=8).generate([RolloutRequest("x", P2, n=4), req])[1]
    assert [s.token_ids for s in alone] == [s.token_ids for s in crowded]
    other_seed = _engine(engine_parts).generate([RolloutRequest("a", P1, n=3, seed=12)])[0]
    assert [s.token_ids for s in other_seed] != [s.token_ids for s in alone]


def test_unseeded_requests_draw_fresh_samples_each_call(engine_parts):
    eng = _engine(engine_parts)
    req = RolloutRequest("a", P1, n=4)
    assert [s.text for s in eng.generate([req])[0]] != [s.text for s in eng.generate([req])[0]]


def test_temperature_zero_is_the_models_greedy_output_and_logprobs_are_the_models(engine_parts):
    model, tok = engine_parts
    eng = _engine(engine_parts, logprobs=True, max_new_tokens=8)
    (s,), _ = eng.generate([RolloutRequest("a", P1, temperature=0.0), RolloutRequest("b", P2, n=2)])
    ids = torch.tensor([tok(P1, add_special_tokens=False)["input_ids"]])
    ref = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8)
    assert s.token_ids == ref[0, ids.shape[1]:].tolist()
    assert s.finish_reason == "length" and len(s.logprobs) == len(s.token_ids) == 8
    with torch.no_grad():
        logits = model(ref).logits[0, ids.shape[1] - 1 : -1].log_softmax(-1)
    want = logits.gather(-1, torch.tensor(s.token_ids)[:, None])[:, 0]
    assert torch.allclose(torch.tensor(s.logprobs), want, atol=1e-4)


def test_per_request_token_limits_in_one_batch(engine_parts):
    out = _engine(engine_parts).generate([RolloutRequest("a", P1, max_new_tokens=3, temperature=0.0),
                                          RolloutRequest("b", P2, max_new_tokens=9, temperature=0.0)])
    assert [len(ss[0].token_ids) for ss in out] == [3, 9]
    assert all(ss[0].finish_reason == "length" for ss in out)


def test_stop_strings_end_generation_and_are_cut_from_the_text(engine_parts):
    stops = list("0123456789aeiou")
    out = _engine(engine_parts, stop=stops, max_new_tokens=40).generate([RolloutRequest("a", P1, n=6, seed=1)])[0]
    stopped = [s for s in out if s.finish_reason == "stop"]
    assert len(stopped) >= 3
    for s in stopped:
        assert not any(c in s.text for c in stops) and len(s.token_ids) < 40


def test_continuing_a_prefix_equals_generating_after_prompt_plus_prefix(engine_parts):
    eng = _engine(engine_parts)
    (cont,), = eng.generate([RolloutRequest("a", P1, prefix="3+4", temperature=0.0)])
    (whole,), = eng.generate([RolloutRequest("a", P1 + "3+4", temperature=0.0)])
    assert cont.text == whole.text and cont.prefix == "3+4" and cont.response == "3+4" + cont.text


def test_eos_ends_a_row_and_is_kept_in_ids_but_not_in_text(engine_parts):
    eng = _engine(engine_parts)
    tok = eng.tokenizer
    hi = tok("hi", add_special_tokens=False)["input_ids"]
    row = _Row(0, 0, tok(P1, add_special_tokens=False)["input_ids"], limit=10, temperature=1.0, seed=0)
    ids = hi + [tok.eos_token_id] + [tok.pad_token_id] * 3
    s = eng._sample(row, RolloutRequest("a", P1), ids, logprobs=None)
    assert (s.text, s.token_ids, s.finish_reason) == ("hi", hi + [tok.eos_token_id], "stop")


def test_bad_requests_fail_with_the_request_named(engine_parts):
    with pytest.raises(ValueError, match="request 'q': n must be >= 1"):
        _engine(engine_parts).generate([RolloutRequest("q", P1, n=0)])


def test_seeded_sampling_follows_the_distribution_and_top_k():
    probs = torch.tensor([0.5, 0.25, 0.0, 0.15, 0.1])
    rows = 8000
    scores = probs.log().repeat(rows, 1)
    seeds = torch.arange(rows, dtype=torch.int64) * 7919 + 3
    ids = torch.zeros(rows, 5, dtype=torch.long)
    pick = RowSampler(seeds, torch.ones(rows), prompt_len=5)(ids, scores).argmax(-1)
    freq = torch.bincount(pick, minlength=5).float() / rows
    assert torch.allclose(freq, probs, atol=0.02), freq
    assert freq[2] == 0  # a token of probability 0 is never drawn
    top1 = RowSampler(seeds, torch.ones(rows), prompt_len=5, top_k=1)(ids, scores).argmax(-1)
    assert bool((top1 == 0).all())
    hot = RowSampler(seeds, torch.full((rows,), 100.0), prompt_len=5)(ids, scores).argmax(-1)
    assert (torch.bincount(hot, minlength=5)[[0, 1, 3, 4]] > rows / 8).all()  # high temperature: near uniform
    u = row_uniforms(row_keys(seeds), step=3)
    assert 0 < float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01
    assert not torch.equal(u, row_uniforms(row_keys(seeds), step=4))


def test_truncate_at_stop_cuts_at_the_earliest():
    assert truncate_at_stop("ab\n\ncd###", ["###", "\n\n"]) == ("ab", True)
    assert truncate_at_stop("abc", ["x"]) == ("abc", False)
