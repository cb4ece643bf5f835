"""GPU paths: the HF backend on CUDA, the vLLM backend (generate, weight sync, generation after sync), NCCL sync.

Skipped cleanly without a CUDA GPU (and without vLLM for the vLLM tests); NCCL needs two GPUs because NCCL refuses
two ranks on one device. With one GPU the learner stays on CPU and syncs over gloo into the GPU workers.
"""

from __future__ import annotations

import pytest
import torch

from rayscale.config import RoleResources, RolloutConfig, SyncConfig, TinyModelConfig, VLLMConfig
from rayscale.types import RolloutRequest

pytestmark = [pytest.mark.gpu, pytest.mark.ray]

PROMPTS = ["<|user|>3+4*2<|assistant|>", "<|user|>12-5<|assistant|>"]
STEP_TEXT = "<|user|>3+4*2<|assistant|>zzzzzzzzzzzzzzzzzzzz</s>"
TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL sync needs two GPUs")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from rayscale.models import make_tiny_model

    # head_dim 32: within what vLLM's attention kernels support
    cfg = TinyModelConfig(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=256, seed=3)
    return str(make_tiny_model(tmp_path_factory.mktemp("gpu") / "model", cfg))


@pytest.fixture(scope="module")
def ray_gpu():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=4, num_gpus=torch.cuda.device_count(), log_to_driver=False)
    yield ray
    ray.shutdown()


def _learner(ray, model_dir, gpu: bool):
    from rayscale.sync.toy_learner import ToyLearner

    actor = ray.remote(ToyLearner).options(num_cpus=1, num_gpus=int(gpu)).remote(
        model_dir, lr=0.5, device="cuda" if gpu else "cpu")
    ray.get(actor.ready.remote())
    return actor


def _manager(model_dir, backend: str, sync_backend: str, **rollout):
    from rayscale.actors.rollout import RolloutManager

    cfg = RolloutConfig(backend=backend, num_workers=1, device="cuda", max_new_tokens=12, **rollout)
    return RolloutManager(model_dir, cfg, SyncConfig(backend=sync_backend, bucket_size_mb=0.25, verify=True),
                          RoleResources(num_cpus=1, num_gpus=1))


def _greedy(manager) -> list[str]:
    out = manager.generate([RolloutRequest(f"g{i}", p, temperature=0.0) for i, p in enumerate(PROMPTS)])
    return [s[0].text for s in out]


@pytest.mark.parametrize("sync_backend", ["gloo", pytest.param("nccl", marks=TWO_GPUS)])
def test_hf_backend_on_gpu_matches_the_learner_bit_for_bit(ray_gpu, model_dir, sync_backend):
    ray = ray_gpu
    learner = _learner(ray, model_dir, gpu=sync_backend == "nccl")
    manager = _manager(model_dir, "hf", sync_backend)
    try:
        ray.get(learner.train_step.remote(STEP_TEXT))
        manager.sync_from(learner, 1)
        want = ray.get(learner.get_state_checksum.remote())  # checksums agree across devices by construction
        assert ray.get(manager.workers[0].get_state_checksum.remote()) == want
        assert manager.policy_versions() == [1]
    finally:
        manager.shutdown()
        ray.kill(learner)


@pytest.mark.vllm
@pytest.mark.parametrize("sync_backend", ["gloo", pytest.param("nccl", marks=TWO_GPUS)])
def test_vllm_backend_generates_syncs_and_generates_differently_after(ray_gpu, model_dir, sync_backend):
    ray = ray_gpu
    learner = _learner(ray, model_dir, gpu=sync_backend == "nccl")
    manager = _manager(model_dir, "vllm", sync_backend, logprobs=True,
                       vllm=VLLMConfig(gpu_memory_utilization=0.3, enforce_eager=True, dtype="float32"))
    try:
        out = manager.generate([RolloutRequest("a", PROMPTS[0], n=3, seed=1)])
        assert len(out[0]) == 3 and all(s.policy_version == 0 and s.token_ids for s in out[0])
        assert all(len(s.logprobs) == len(s.token_ids) for s in out[0])
        before = _greedy(manager)
        ray.get(learner.train_step.remote(STEP_TEXT))
        report = manager.sync_from(learner, 1)
        assert report["version"] == 1 and manager.policy_versions() == [1]
        after = _greedy(manager)
        assert after != before
        assert after == ray.get(learner.greedy.remote(PROMPTS, 12))
    finally:
        manager.shutdown()
        ray.kill(learner)
