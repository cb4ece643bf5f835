"""Learner configuration: DeepSpeed config dicts, LR schedule, device choice, the skipped CPU shm op (no Ray)."""

from __future__ import annotations

import pytest
import torch

from rayscale.config import LearnerConfig, RoleResources
from rayscale.config_loading import load_config
from rayscale.errors import ConfigError
from rayscale.learner import deepspeed_config as dsc


def test_decaying_schedules_need_total_steps():
    with pytest.raises(ConfigError, match="lr_schedule=cosine decays over learner.total_steps"):
        load_config(overrides=["learner.lr_schedule=cosine"])
    assert load_config(overrides=["learner.lr_schedule=cosine", "learner.total_steps=100"]).learner.total_steps == 100


def test_policy_config_one_boundary_per_call_and_precision_by_device():
    cfg = LearnerConfig(zero_stage=3, micro_batch_size=4, grad_clip=0.5, zero3_param_persistence_threshold=0)
    cpu = dsc.policy_config(cfg, "cpu")
    assert cpu["managed_gradient_accumulation"] is False and cpu["gradient_accumulation_steps"] == 1
    assert cpu["gradient_clipping"] == 0.5 and cpu["train_micro_batch_size_per_gpu"] == 4
    assert cpu["zero_optimization"] == {"stage": 3, "stage3_param_persistence_threshold": 0}
    assert cpu["optimizer"]["params"]["torch_adam"] is True
    assert cpu["bf16"]["enabled"] is False and dsc.policy_config(cfg, "cuda")["bf16"]["enabled"] is True
    assert dsc.policy_config(LearnerConfig(precision="bf16"), "cpu")["bf16"]["enabled"] is True
    assert dsc.reference_config(LearnerConfig(zero_stage=1), "cpu")["zero_optimization"]["stage"] == 3


def _lrs(cfg: LearnerConfig, steps: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = dsc.make_scheduler(cfg)(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_constant_and_linear_decay():
    assert _lrs(LearnerConfig(lr=1.0, warmup_steps=2), 4) == pytest.approx([0.0, 0.5, 1.0, 1.0])
    assert _lrs(LearnerConfig(lr=1.0, lr_schedule="linear", total_steps=4), 4) == pytest.approx([1, 0.75, 0.5, 0.25])


def test_device_follows_the_gpu_resources():
    from rayscale.actors.learner import _resolve_device

    assert _resolve_device(LearnerConfig(), RoleResources(num_gpus=1)) == "cuda"
    assert _resolve_device(LearnerConfig(), RoleResources()) == "cpu"
    with pytest.raises(ConfigError, match="needs cluster.learner.num_gpus > 0"):  # at load, the one validation
        load_config(None, ["learner.device=cuda"])


def test_cpu_shm_comm_op_is_never_built():
    import importlib

    from rayscale.learner.engine import _skip_cpu_shm_op

    ds_torch = importlib.import_module("deepspeed.comm.torch")  # `deepspeed.comm.torch` the attribute is torch
    _skip_cpu_shm_op()
    assert ds_torch.build_shm_op() is None  # no gcc run, no shared build lock to wait on


def test_offload_moves_gpu_state_to_the_host_and_leaves_cpu_ranks_alone():
    params = LearnerConfig(zero_stage=3, offload="params")
    gpu = dsc.policy_config(params, "cuda")
    host = {"device": "cpu", "pin_memory": True}
    assert gpu["zero_optimization"]["offload_optimizer"] == host and gpu["zero_optimization"]["offload_param"] == host
    assert gpu["optimizer"]["params"]["torch_adam"] is False  # ZeRO-Offload steps with DeepSpeed's CPU Adam
    ref = dsc.reference_config(params, "cuda")["zero_optimization"]
    assert ref["offload_param"] == host and "offload_optimizer" not in ref  # a frozen engine has no optimizer
    optimizer = dsc.policy_config(LearnerConfig(zero_stage=2, offload="optimizer"), "cuda")["zero_optimization"]
    assert optimizer["offload_optimizer"] == host and "offload_param" not in optimizer
    # on a CPU rank both already live in host memory: the config is the one without offload
    assert dsc.policy_config(params, "cpu") == dsc.policy_config(LearnerConfig(zero_stage=3), "cpu")


def test_offload_names_the_zero_stage_it_needs():
    with pytest.raises(ConfigError, match="offload=params offloads ZeRO-3's parameter shards: set learner.zero_stage=3"):
        load_config(overrides=["learner.offload=params", "learner.zero_stage=2"])
    with pytest.raises(ConfigError, match="offload=optimizer offloads ZeRO's optimizer partitions"):
        load_config(overrides=["learner.offload=optimizer", "learner.zero_stage=0"])
    assert load_config(overrides=["learner.offload=optimizer", "learner.zero_stage=1"]).learner.offload == "optimizer"
