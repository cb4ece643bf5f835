import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rayscale.config import TinyModelConfig
from rayscale.models import build_char_tokenizer, make_tiny_model


def test_tokenizer_round_trips_text_and_chat_template():
    tok = build_char_tokenizer()
    text = "12*3=36\n36-4=32\n\\boxed{32}"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    prompt = tok.apply_chat_template([{"role": "user", "content": "1+2=?"}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt == "<|user|>1+2=?<|assistant|>"
    ids = tok(prompt, add_special_tokens=False).input_ids
    assert len(ids) == len("1+2=?") + 2  # role markers are single tokens
    assert tok.eos_token_id is not None and tok.pad_token_id is not None and tok.padding_side == "left"


def test_tiny_model_round_trips_through_from_pretrained_and_generates(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    batch = tok(["<|user|>1+2=?<|assistant|>", "<|user|>3*4-5=?<|assistant|>"], return_tensors="pt",
                padding=True, add_special_tokens=False)
    out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert out.shape == (2, batch.input_ids.shape[1] + 5)
    assert tok.chat_template is not None


def test_build_is_deterministic_by_seed(tmp_path):
    a = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path / "a", TinyModelConfig(seed=1)))
    b = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path / "b", TinyModelConfig(seed=1)))
    c = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path / "c", TinyModelConfig(seed=2)))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_qwen2_arch(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path / "q", TinyModelConfig(arch="qwen2")))
    assert model.config.model_type == "qwen2"
