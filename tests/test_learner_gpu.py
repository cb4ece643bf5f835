"""The GPU path: NCCL, bf16, ZeRO-3 policy and ZeRO-3 reference on one GPU (skipped without CUDA)."""

from __future__ import annotations

import math

import pytest

from rayscale.config import AlgoConfig, LearnerConfig, RoleResources, TinyModelConfig
from rayscale.types import PreferencePair
from tests.actor_state import learner_state

pytestmark = [pytest.mark.gpu, pytest.mark.ray]


@pytest.mark.parametrize("offload", ["none", "params"])
def test_zero3_dpo_with_nccl_on_one_gpu(tmp_path, offload):
    import ray
    import torch

    from rayscale.actors.learner import LearnerGroup
    from rayscale.models import make_tiny_model

    model_dir = str(make_tiny_model(tmp_path / "tiny", TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4,
                                                                       intermediate_size=128)))
    pairs = [PreferencePair(str(i), f"<|user|>{i}*{i + 1}<|assistant|>", f"{i * (i + 1)}", f"{i * (i + 1) + 1}",
                            shared_prefix=f"{i}*{i + 1}=") for i in range(8)]
    cfg = LearnerConfig(num_ranks=1, zero_stage=3, ref_mode="zero3", micro_batch_size=4, lr=1e-3,
                        zero3_param_persistence_threshold=0, offload=offload)  # params: ZeRO-3 + CPU offload
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False)
    try:
        with LearnerGroup(model_dir, cfg, AlgoConfig(loss="rpo"), RoleResources(num_cpus=1, num_gpus=1)) as group:
            assert group.info[0]["backend"] == "nccl" and group.info[0]["device"].startswith("cuda")
            steps = [group.train_dpo(pairs) for _ in range(2)]
            state = learner_state(group)
            group.export_hf(str(tmp_path / "export"))
    finally:
        ray.shutdown()
    assert all(math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]) for m in steps)
    assert steps[0]["rewards/chosen"] == pytest.approx(0, abs=1e-3)  # reference = initial policy
    assert steps[1]["loss"] < steps[0]["loss"]
    assert state["model.embed_tokens.weight"].dtype == torch.bfloat16  # bf16 on GPU
    assert (tmp_path / "export" / "config.json").is_file()
