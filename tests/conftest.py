"""Shared fixtures: the real data in ../shared/data, a tiny model built once per session, GPU/vLLM skips."""

from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    import torch

    has_gpu = torch.cuda.is_available()
    has_vllm = importlib.util.find_spec("vllm") is not None
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(pytest.mark.skip(reason="needs vLLM installed (pip install 'rayscale[vllm]')"))


@pytest.fixture(scope="session")
def shared_data():
    from rayscale.data import shared_data_dir

    d = shared_data_dir()
    if not (d / "gsm8k_test.jsonl").is_file():
        pytest.skip(f"shared data not found at {d} (set RAYSCALE_SHARED_DATA)")
    return d


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from rayscale.models import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray for one test module (address="local": never join a cluster already on the host)."""
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False)
    yield
    ray.shutdown()
