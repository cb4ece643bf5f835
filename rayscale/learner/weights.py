"""What the learner trains, what leaves it and where its reference lives: full fine-tuning or LoRA, chosen once
from `learner.lora` (`choose`), so that the engine asks its weights object and never which kind it has.

- `FullWeights`: every parameter trains; the policy leaves as it is (gathered under ZeRO-3); the reference is a
  model copy the engine loads.
- `LoraWeights`: peft adapters (rayscale.learner.lora); only the adapter trains; everything that leaves the rank is
  the merged model under the base model's names; the reference is the policy's own frozen `reference` adapter when
  it starts from the policy's weights (no copy), or else a copy that receives the merged weights.

Both satisfy the `Weights` protocol (tests/test_learner_weights.py holds them to it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from rayscale.config import LoraSettings
from rayscale.learner import lora

Named = Iterator[tuple[str, torch.Tensor]]


@runtime_checkable
class Weights(Protocol):
    lora: bool  # learner_state.json's "lora": a checkpoint resumes only into a learner of the same kind
    reference_in_policy: bool  # the reference is part of the policy module: nothing to load, copy, save or move
    deterministic_forward: bool  # the training forward has no dropout: at equal weights it scores as the reference

    def prepare(self, model: nn.Module) -> None:
        """Before DeepSpeed sees `model`: make it what trains (in place); its `requires_grad` parameters train."""

    def named_parameters(self, model: nn.Module, remove_duplicate: bool = True) -> Iterator[tuple[str, nn.Parameter]]:
        """The policy's own parameters under the base model's names (whatever else `prepare` added left out)."""

    def state_name(self, name: str) -> str:
        """A parameter's or buffer's name of the prepared model, as the base model names it."""

    def exported(self, model: nn.Module, gather: Callable[[nn.Module], Named]) -> Named:
        """(base name, full tensor) of the policy as it leaves the rank (weight sync, HF export, a reference copy);
        `gather` is the engine's iterator over a module's full parameters (ZeRO-3: gathered bucket by bucket)."""

    def reference(self, module: nn.Module) -> Callable[..., torch.Tensor] | None:
        """The reference inside the policy `module` (DeepSpeed's wrapper of the prepared model), or None when the
        engine loads a copy (`reference_in_policy` False)."""

    def refresh_reference(self, model: nn.Module) -> None:
        """Reference := the current policy, inside the policy (only called when `reference_in_policy`)."""


class FullWeights:
    """Full fine-tuning: the model as loaded trains and leaves; the reference is always a copy."""

    lora = False
    reference_in_policy = False
    deterministic_forward = True  # the model's own dropout is always off (rayscale.algos.forward.disable_dropout)

    def prepare(self, model: nn.Module) -> None:
        pass  # every parameter already requires grad

    def named_parameters(self, model: nn.Module, remove_duplicate: bool = True) -> Iterator[tuple[str, nn.Parameter]]:
        return model.named_parameters(remove_duplicate=remove_duplicate)

    def state_name(self, name: str) -> str:
        return name

    def exported(self, model: nn.Module, gather: Callable[[nn.Module], Named]) -> Named:
        return gather(model)

    def reference(self, module: nn.Module) -> None:
        return None

    def refresh_reference(self, model: nn.Module) -> None:
        raise RuntimeError("full fine-tuning keeps no reference inside the policy")


class LoraWeights:
    """LoRA: peft adapters injected into the model in place (`lora.wrap`); `peft_model` is the PeftModel around it,
    kept to switch adapters."""

    lora = True

    def __init__(self, settings: LoraSettings, reference_in_policy: bool):
        self.settings = settings
        self.reference_in_policy = reference_in_policy
        self.deterministic_forward = settings.dropout == 0
        self.peft_model = None

    def prepare(self, model: nn.Module) -> None:
        self.peft_model = lora.wrap(model, self.settings, reference_adapter=self.reference_in_policy)

    def named_parameters(self, model: nn.Module, remove_duplicate: bool = True) -> Iterator[tuple[str, nn.Parameter]]:
        return lora.base_named_parameters(model, remove_duplicate)

    def state_name(self, name: str) -> str:
        return lora.base_name(name)

    def exported(self, model: nn.Module, gather: Callable[[nn.Module], Named]) -> Named:
        return lora.merged_parameters(model)  # ZeRO 0-2 only (validated at load): whole tensors, nothing to gather

    def reference(self, module: nn.Module) -> lora.AdapterReference | None:
        return lora.AdapterReference(self.peft_model, module) if self.reference_in_policy else None

    def refresh_reference(self, model: nn.Module) -> None:
        lora.copy_adapter(model, lora.ADAPTER, lora.REFERENCE)  # base weights shared: reference == policy exactly


def choose(settings: LoraSettings, policy_is_reference: bool) -> FullWeights | LoraWeights:
    """`learner.lora.enabled` decides; `policy_is_reference`: the reference starts from the policy's own weights
    (no model.ref_path of its own), which LoRA serves from the policy itself."""
    return LoraWeights(settings, policy_is_reference) if settings.enabled else FullWeights()
