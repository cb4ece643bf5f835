"""rayscale.rollout.backends: both rollout backends implement the one `RolloutBackend` protocol (and vLLM's the
native-transfer extension), checked on the classes, so no vLLM is started and none needs to be installed."""

from __future__ import annotations

import inspect

import pytest

from rayscale.config import RolloutConfig
from rayscale.rollout.backends import NativeTransferBackend, RolloutBackend, make_backend
from rayscale.rollout.hf_engine import HFBackend
from rayscale.rollout.vllm_engine import VLLMBackend


def _members(protocol) -> dict[str, object]:
    """The protocol's own methods and properties, and its annotated attributes (as None), its bases' included."""
    out: dict[str, object] = {}
    for klass in reversed(protocol.__mro__):
        if klass is object or not getattr(klass, "_is_protocol", False):
            continue
        out.update(dict.fromkeys(vars(klass).get("__annotations__", {})))
        out.update({n: v for n, v in vars(klass).items() if not n.startswith("_")
                    and (inspect.isfunction(v) or isinstance(v, property))})
    return out


def _has(cls, name: str) -> bool:
    return any(name in vars(k) or name in vars(k).get("__annotations__", {}) for k in cls.__mro__)


@pytest.mark.parametrize(("backend", "protocol"), [(HFBackend, RolloutBackend), (VLLMBackend, RolloutBackend),
                                                   (VLLMBackend, NativeTransferBackend)],
                         ids=["hf", "vllm_engine", "vllm_engine-native"])
def test_the_backend_implements_the_protocol(backend, protocol):
    members = _members(protocol)
    assert {"generate", "receive_weights", "load_buckets", "sleep", "sync_ranks", "dtype", "device"} <= set(members)
    for name, declared in members.items():
        assert _has(backend, name), f"{backend.__name__} lacks {name}"
        if inspect.isfunction(declared):
            own = getattr(backend, name)
            assert inspect.isfunction(own), name
            assert list(inspect.signature(own).parameters) == list(inspect.signature(declared).parameters), name
        elif isinstance(declared, property):
            assert isinstance(getattr(backend, name), property), name


def test_only_vllm_offers_the_native_transfer():
    extra = set(_members(NativeTransferBackend)) - set(_members(RolloutBackend))
    assert extra == {"init_native_transfer", "receive_native"}
    assert not any(_has(HFBackend, name) for name in extra)


def test_make_backend_names_the_choices():
    cfg = RolloutConfig.model_construct(backend="sglang")  # load-time validation would refuse it first
    with pytest.raises(ValueError, match="unknown rollout backend 'sglang'; expected hf or vllm"):
        make_backend("unused", cfg)
