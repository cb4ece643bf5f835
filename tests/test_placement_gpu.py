"""Placement on a real GPU (skips without CUDA): its own module, so no other Ray cluster is connected."""

import os

import pytest

from rayscale.config_loading import load_config

pytestmark = [pytest.mark.ray, pytest.mark.gpu]


def test_a_placed_rollout_worker_sees_exactly_its_gpu():
    """On a real GPU: the bundle's GPU is what the actor gets as CUDA_VISIBLE_DEVICES (skips without CUDA)."""
    import ray

    from rayscale.actors.placement import place_roles, remove_placement_groups

    cfg = load_config(None, ["rollout.num_workers=1", "cluster.rollout={num_cpus: 1, num_gpus: 1}",
                             "learner.num_ranks=1", "cluster.learner={num_cpus: 0.5}", "cluster.teacher={num_cpus: 0.5}",
                             "verifier.num_workers=1", "cluster.verifier={num_cpus: 0.5}"])
    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR")
    try:
        placements = place_roles(cfg)

        @ray.remote
        def visible():
            import torch

            return os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.device_count()

        devices, count = ray.get(visible.options(**placements["rollout"].actor_options(0)).remote(), timeout=120)
        assert devices not in (None, "") and count == 1
        remove_placement_groups(placements)
    finally:
        ray.shutdown()
