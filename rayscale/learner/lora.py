"""LoRA on the learner's policy (peft): adapters in, merged weights out.

`wrap` injects peft LoRA layers into a Hugging Face causal LM in place; the injected HF model (not the PeftModel
wrapper) is what the learner trains, so its parameter names stay the HF ones plus peft's `.base_layer` and
`.lora_A.<adapter>` / `.lora_B.<adapter>` segments (no `base_model.model.` prefix). Two adapters:

- `ADAPTER` ("default"): the trained one, the only trainable parameters of the policy;
- `REFERENCE` ("reference", only when the reference is the policy's own starting weights): frozen. The DPO
  reference is the base weights plus this adapter, which starts at exactly zero (B = 0), so no model copy is
  needed; `copy_adapter(ADAPTER -> REFERENCE)` makes the reference equal to the current policy.

Everything that leaves the learner is the merged model: `merged_parameters` yields W + (alpha/r)·B@A (peft's
`get_delta_weight`, the very delta `merge_and_unload` adds) under the base model's names, computed afresh each
time, so the training weights are never modified. Whole tensors only: no ZeRO-3 (LearnerConfig rejects it).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from rayscale.config import LoraSettings
from rayscale.errors import ConfigError

ADAPTER = "default"
REFERENCE = "reference"


def peft_config(settings: LoraSettings):
    from peft import LoraConfig  # local: optional dependency (rayscale[lora])

    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.target_modules), bias="none", task_type="CAUSAL_LM")


def wrap(model: nn.Module, settings: LoraSettings, reference_adapter: bool):
    """Inject the adapters into `model` (in place) and return the PeftModel around it; only `ADAPTER` trains."""
    if settings.sync != "merged":  # the one mode: engines get merged weights (no vLLM --enable-lora path)
        raise ConfigError(f"learner.lora.sync={settings.sync!r} is not supported; use merged")
    check_targets(model, settings.target_modules)
    try:
        from peft import get_peft_model  # local: optional dependency
    except ImportError:
        raise ConfigError("learner.lora.enabled needs peft: pip install 'rayscale[lora]'") from None

    peft_model = get_peft_model(model, peft_config(settings), adapter_name=ADAPTER)
    if reference_adapter:
        peft_model.add_adapter(REFERENCE, peft_config(settings))  # B = 0: exactly the base weights
    peft_model.set_adapter(ADAPTER)  # active and trainable; every other adapter frozen
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable or any(f".{ADAPTER}." not in n for n in trainable):
        raise RuntimeError(f"peft left unexpected trainable parameters: {trainable[:5]}")
    return peft_model


def check_targets(model: nn.Module, targets: list[str]) -> None:
    """Each target must name (as peft matches: the whole module name or its last dotted part(s)) at least one
    linear layer other than the LM head, whose weight is tied to the embeddings in most small models."""
    head = model.get_output_embeddings()
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head]
    head_names = [name for name, m in model.named_modules() if m is head]

    def matches(name: str, target: str) -> bool:
        return name == target or name.endswith("." + target)

    on_head = [t for t in targets if any(matches(n, t) for n in head_names)]
    if on_head:
        raise ConfigError(f"learner.lora.target_modules: {on_head} is the LM head; LoRA here adapts the "
                          f"transformer's linear layers only")
    missing = [t for t in targets if not any(matches(n, t) for n in linear)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in linear})
        raise ConfigError(f"learner.lora.target_modules: {missing} match no linear layer of this "
                          f"{type(model).__name__}; its linear layers are named {', '.join(leaves)}")


def lora_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer  # local: optional dependency

    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            yield name, module


def base_name(name: str) -> str:
    """The base model's name of a parameter or buffer of the injected model (peft wraps each target once)."""
    return name.replace(".base_layer.", ".")


def _adapter_ids(model: nn.Module) -> set[int]:
    ids = set()
    for _, layer in lora_layers(model):
        for attr in layer.adapter_layer_names + layer.other_param_names:
            value = getattr(layer, attr, None)
            if isinstance(value, nn.Module):
                ids.update(id(p) for p in value.parameters())
    return ids


def base_named_parameters(model: nn.Module, remove_duplicate: bool = True
                          ) -> Iterator[tuple[str, nn.Parameter]]:
    """The base (non-adapter) parameters under the base model's names, in its `named_parameters()` order."""
    adapters = _adapter_ids(model)
    for name, p in model.named_parameters(remove_duplicate=remove_duplicate):
        if id(p) not in adapters:
            yield base_name(name), p


@torch.no_grad()
def merged_parameters(model: nn.Module, adapter: str = ADAPTER) -> Iterator[tuple[str, torch.Tensor]]:
    """(base name, tensor) of the merged model, in the base model's order, tied weights once: an adapted weight is
    a fresh W + get_delta_weight(adapter) (what merge_and_unload adds in place), every other tensor the live one."""
    layers = dict(lora_layers(model))  # injected at the base module's own path: q_proj.weight -> layer q_proj
    for name, p in base_named_parameters(model):
        owner, _, leaf = name.rpartition(".")
        layer = layers.get(owner)
        if layer is not None and leaf == "weight" and adapter in layer.lora_A:
            yield name, p.data + layer.get_delta_weight(adapter)
        else:
            yield name, p.data


@torch.no_grad()
def copy_adapter(model: nn.Module, source: str, target: str) -> None:
    """Adapter `target` := adapter `source` (same shapes and scaling): the reference refresh."""
    for _, layer in lora_layers(model):
        for attr in ("lora_A", "lora_B"):
            getattr(layer, attr)[target].weight.copy_(getattr(layer, attr)[source].weight)


class AdapterReference:
    """The DPO reference without a model copy: the policy module with `REFERENCE` active, in eval mode (adapter
    dropout off). Callable like the reference module; call it under torch.no_grad. Not an nn.Module on purpose:
    freezing or `.eval()`-ing "the reference" must not reach the shared policy weights."""

    def __init__(self, peft_model, module: nn.Module):
        self.peft_model, self.module = peft_model, module

    def __call__(self, **inputs) -> torch.Tensor:
        training = self.module.training
        self.module.eval()
        self.peft_model.set_adapter(REFERENCE, inference_mode=True)  # nothing trainable while it scores
        try:
            return self.module(**inputs)
        finally:
            self.peft_model.set_adapter(ADAPTER)  # the trained adapter active and trainable again
            self.module.train(training)
