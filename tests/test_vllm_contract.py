"""The vLLM contract (rayscale.rollout.vllm_contract): every vLLM name rayscale touches, checked against the
installed vLLM when an engine starts; a missing one is one clear error naming the supported range."""

from __future__ import annotations

import importlib.util
import types

import pytest

from rayscale.rollout import vllm_contract as C


def test_a_missing_name_or_parameter_is_reported_by_entry():
    def resolve(module, attr):
        if attr == "LLM.sleep":
            raise AttributeError(attr)
        return types.SimpleNamespace()

    def parameters(obj):
        return {"level", "tags", "prompts", "sampling_params"}  # everything else "renamed"

    gaps = C.missing(resolve, parameters)
    assert "vllm.LLM.sleep" in gaps
    assert "vllm.LLM.collective_rpc(method, args)" in gaps
    assert "vllm.LLM.generate(use_tqdm)" in gaps and not any(g.startswith("vllm.LLM.wake_up") for g in gaps)


def test_the_error_names_the_supported_range_and_what_is_missing(monkeypatch):
    monkeypatch.setattr(C, "_CHECKED", False)
    monkeypatch.setattr(C, "missing", lambda: ["vllm.LLM.update_weights(request)"])
    with pytest.raises(C.VLLMContractError, match=r"is not a vLLM rayscale supports \(vllm>=0\.32,<0\.33\): it "
                                                  r"lacks vllm\.LLM\.update_weights\(request\)"):
        C.check()


def test_the_extra_is_bound_to_the_supported_range():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["vllm"] == [f"vllm{C.SUPPORTED}"]


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM (the vLLM environment)")
def test_the_installed_vllm_has_every_name_rayscale_touches():
    assert C.missing() == []
    C.check()
