"""rayscale.learner.weights: full fine-tuning and LoRA behind one protocol, so the engine never asks which it has.
Pure torch + peft on a tiny model (no DeepSpeed, no process group)."""

from __future__ import annotations

import ast
import inspect

import pytest
import torch

from rayscale.config import LoraSettings
from rayscale.learner import engine, lora
from rayscale.learner.weights import FullWeights, LoraWeights, Weights, choose

KINDS = [FullWeights, LoraWeights]


def _protocol_members() -> dict[str, object]:
    return {name: value for name, value in vars(Weights).items()
            if not name.startswith("_") and inspect.isfunction(value)}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_each_kind_has_the_protocol_s_methods_with_its_signatures(kind):
    members = _protocol_members()
    assert {"prepare", "exported", "reference", "refresh_reference", "named_parameters"} <= set(members)
    for name, proto in members.items():
        own = getattr(kind, name)
        assert list(inspect.signature(own).parameters) == list(inspect.signature(proto).parameters), name
    weights = kind(LoraSettings(enabled=True), True) if kind is LoraWeights else kind()
    assert isinstance(weights, Weights)  # the attributes too (lora, reference_in_policy, deterministic_forward)


def test_the_config_chooses_the_kind_and_where_the_reference_lives():
    assert type(choose(LoraSettings(), policy_is_reference=True)) is FullWeights
    assert not choose(LoraSettings(), policy_is_reference=True).reference_in_policy  # always a copy
    in_policy = choose(LoraSettings(enabled=True), policy_is_reference=True)
    assert type(in_policy) is LoraWeights and in_policy.reference_in_policy and in_policy.lora
    assert not choose(LoraSettings(enabled=True), policy_is_reference=False).reference_in_policy
    assert not choose(LoraSettings(enabled=True, dropout=0.1), policy_is_reference=True).deterministic_forward


def test_the_engine_leaves_every_lora_decision_to_its_weights_object():
    """The engine imports neither lora nor peft, and reads `lora` only to choose its weights and to write the
    checkpoint's flag: nothing else in it depends on whether LoRA is on."""
    tree = ast.parse(inspect.getsource(engine))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names} | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if "lora" in name or "peft" in name}
    reads = sorted(ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                   and node.attr in ("lora", "peft_model"))
    assert reads == ["self.cfg.lora", "self.weights.lora", "self.weights.lora"]  # choose; save and load flag


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.tiny_models import diverse_tiny_model

    return diverse_tiny_model(tmp_path_factory.mktemp("weights") / "model", seed=5)


def test_fresh_adapters_export_exactly_what_full_fine_tuning_exports(model_dir):
    """B starts at 0: the LoRA policy leaves the rank as the base model, under the same names and order, and its
    reference inside the policy scores as the policy does."""
    from transformers import AutoModelForCausalLM

    pytest.importorskip("peft")
    full_model = AutoModelForCausalLM.from_pretrained(model_dir)
    lora_model = AutoModelForCausalLM.from_pretrained(model_dir)
    full, adapted = FullWeights(), LoraWeights(LoraSettings(enabled=True, rank=4), reference_in_policy=True)
    full.prepare(full_model)
    adapted.prepare(lora_model)

    def gather(model):
        return ((n, p.data) for n, p in model.named_parameters())

    want = list(full.exported(full_model, gather))
    got = list(adapted.exported(lora_model, gather))
    assert [n for n, _ in got] == [n for n, _ in want]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, want))
    assert [n for n, _ in adapted.named_parameters(lora_model)] == [n for n, _ in full.named_parameters(full_model)]
    assert all(p.requires_grad == (f".{lora.ADAPTER}." in n) for n, p in lora_model.named_parameters())
    assert full.reference(full_model) is None
    ids = torch.tensor([[3, 5, 7, 9]])
    reference = adapted.reference(lora_model)
    with torch.no_grad():
        assert torch.equal(reference(input_ids=ids).logits, full_model(input_ids=ids).logits)
