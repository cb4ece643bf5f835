"""GPU paths: the DeepSpeed learner (a 1-rank LearnerGroup on the GPU) takes a DPO step and syncs to an HF or a vLLM
rollout worker on the GPU; afterwards the worker holds the learner's weights bit for bit (HF) and generates what
the learner generates (vLLM; by broadcast and through vLLM's weight-transfer API, `vllm_native`). The CPU version
of the same: tests/test_vllm_sync.py.

On one GPU the learner and the worker share it (half a GPU each) and sync over gloo: NCCL refuses two ranks on one
device. With two GPUs the same tests also run over NCCL, a whole GPU each. Skipped cleanly without a CUDA GPU (and
without vLLM for the vLLM test).
"""

from __future__ import annotations

import math

import pytest
import torch

from rayscale.config import AlgoConfig, LearnerConfig, RoleResources, RolloutConfig, SyncConfig, VLLMConfig
from rayscale.types import PreferencePair, RolloutRequest
from rayscale.wire.buckets import state_checksums
from tests.actor_state import learner_greedy, learner_state, policy_versions

pytestmark = [pytest.mark.gpu, pytest.mark.ray]

PROMPTS = ["<|user|>3+4*2<|assistant|>", "<|user|>12-5<|assistant|>"]
NEW_TOKENS = 12
TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL sync needs two GPUs")
SYNC_BACKENDS = ["gloo", pytest.param("nccl", marks=TWO_GPUS)]
GPUS_PER_ACTOR = {"gloo": 0.5, "nccl": 1.0}  # gloo: learner and worker share one GPU; NCCL: one GPU each


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.tiny_models import diverse_tiny_model

    # head_dim 32 (within vLLM's attention kernels); scaled layers, so greedy outputs differ by prompt and weights
    return diverse_tiny_model(tmp_path_factory.mktemp("gpu") / "model", seed=3)


@pytest.fixture(scope="module")
def ray_gpu():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=4, num_gpus=torch.cuda.device_count(), log_to_driver=False)
    yield ray
    ray.shutdown()


def _weight_sync(sync_backend: str, transport: str = "broadcast"):
    from rayscale.sync.coordinator import WeightSync

    return WeightSync(SyncConfig(transport=transport, backend=sync_backend, bucket_size_mb=0.25, verify=True),
                      rollout_gpus=1)


def _learner(model_dir, sync_backend: str, bucket_bytes: int, precision: str = "auto"):
    """The real sender: a 1-rank DeepSpeed learner group (ZeRO-2) on its share of a GPU."""
    from rayscale.actors.learner import LearnerGroup

    cfg = LearnerConfig(num_ranks=1, zero_stage=2, precision=precision, lr=5e-2, micro_batch_size=4, max_seq_len=96,
                        collective_timeout_s=300)
    return LearnerGroup(model_dir, cfg, AlgoConfig(loss="sigmoid", beta=0.1),
                        RoleResources(num_cpus=1, num_gpus=GPUS_PER_ACTOR[sync_backend]), bucket_bytes=bucket_bytes)


def _manager(model_dir, backend: str, sync_backend: str, weight_transfer: str | None = None, **rollout):
    from rayscale.actors.rollout import RolloutManager

    cfg = RolloutConfig(backend=backend, num_workers=1, device="cuda", max_new_tokens=NEW_TOKENS, **rollout)
    return RolloutManager(model_dir, cfg,
                          resources_cfg=RoleResources(num_cpus=1, num_gpus=GPUS_PER_ACTOR[sync_backend]),
                          weight_transfer=weight_transfer)


def _learner_greedy(learner) -> list[list[int]]:
    return learner_greedy(learner, PROMPTS, NEW_TOKENS)


def _engine_greedy(manager) -> list[list[int]]:
    out = manager.generate([RolloutRequest(f"g{i}", p, temperature=0.0) for i, p in enumerate(PROMPTS)])
    return [s[0].token_ids for s in out]


def _step(learner) -> None:
    """One DPO step that moves the learner's greedy output (checked, or the sync tests would prove nothing)."""
    before = _learner_greedy(learner)
    pairs = [PreferencePair(f"p{i}", p, chosen=" 42\n#### 42", rejected=" 7\n#### 7")
             for i, p in enumerate(PROMPTS * 2)]
    assert math.isfinite(learner.train_dpo(pairs)["loss"])
    assert _learner_greedy(learner) != before, "the DPO step did not change the learner's greedy output"


def _shutdown(weight_sync, manager, learner) -> None:
    weight_sync.close()
    if manager is not None:
        manager.shutdown()
    if learner is not None:
        learner.shutdown()


@pytest.mark.parametrize("sync_backend", SYNC_BACKENDS)
def test_hf_backend_on_gpu_matches_the_learner_bit_for_bit(ray_gpu, model_dir, sync_backend):
    ray = ray_gpu
    weight_sync = _weight_sync(sync_backend)
    learner = manager = None
    try:
        # both bf16 on the GPU (precision auto, dtype auto): the worker must end up with the very same tensors
        learner = _learner(model_dir, sync_backend, weight_sync.bucket_bytes)
        manager = _manager(model_dir, "hf", sync_backend)
        assert learner.info[0]["device"].startswith("cuda")
        _step(learner)
        want = state_checksums(learner_state(learner).items())  # equal across devices by construction
        worker = manager.workers[0]
        assert ray.get(worker.get_state_checksum.remote()) != want  # the step moved the weights: a sync to check
        report = weight_sync.push(learner.ranks, manager, 1)  # verify=True: checksums and the output check inside
        assert report["version"] == 1 and policy_versions(manager) == [1]
        assert ray.get(worker.get_state_checksum.remote()) == want
    finally:
        _shutdown(weight_sync, manager, learner)


@pytest.mark.vllm
@pytest.mark.parametrize("transport", ["broadcast", "vllm_native"])  # vllm_native: vLLM's weight-transfer API
@pytest.mark.parametrize("sync_backend", SYNC_BACKENDS)
def test_vllm_backend_generates_syncs_and_generates_what_the_learner_generates(ray_gpu, model_dir, sync_backend,
                                                                              transport):
    weight_sync = _weight_sync(sync_backend, transport)
    learner = manager = None
    try:
        # fp32 on both sides, as the engine (vLLM's gpu_memory_utilization: a share of the GPU the learner shares)
        manager = _manager(model_dir, "vllm", sync_backend, weight_sync.vllm_weight_transfer, logprobs=True,
                           vllm=VLLMConfig(gpu_memory_utilization=0.3, enforce_eager=True, dtype="float32"))
        learner = _learner(model_dir, sync_backend, weight_sync.bucket_bytes, precision="fp32")
        assert learner.info[0]["device"].startswith("cuda")
        out = manager.generate([RolloutRequest("a", PROMPTS[0], n=3, seed=1)])
        assert len(out[0]) == 3 and all(s.policy_version == 0 and s.token_ids for s in out[0])
        assert all(len(s.logprobs) == len(s.token_ids) for s in out[0])
        before = _engine_greedy(manager)
        assert before == _learner_greedy(learner)  # both start from the same directory
        _step(learner)
        report = weight_sync.push(learner.ranks, manager, 1)  # verify=True: checksums and the output check inside
        assert report["version"] == 1 and policy_versions(manager) == [1]
        after = _engine_greedy(manager)
        assert after != before
        assert after == _learner_greedy(learner)
    finally:
        _shutdown(weight_sync, manager, learner)


@pytest.mark.vllm
def test_colocated_vllm_sleeps_for_the_learner_and_takes_its_weights_by_cuda_ipc(ray_gpu, model_dir):
    """cluster.colocate on one GPU: the engine's sleep gives memory back, the learner reloads and steps, then the
    hand-over back (learner offload, engine wake) carries the weights by CUDA IPC (`ipc`) and the engine generates
    what the learner generated."""
    from rayscale.actors.learner import LearnerGroup
    from rayscale.actors.placement import place_roles, remove_placement_groups
    from rayscale.actors.rollout import RolloutManager
    from rayscale.colocation import Turns
    from rayscale.config_loading import load_config
    from rayscale.sync.coordinator import WeightSync

    cfg = load_config(None, [
        f"model.path={model_dir}", "cluster.colocate=true", "rollout.backend=vllm", "rollout.num_workers=1",
        "learner.num_ranks=1", "cluster.learner.num_gpus=1", "cluster.rollout.num_gpus=1",
        "rollout.vllm.gpu_memory_utilization=0.3", "rollout.vllm.enforce_eager=true", "rollout.vllm.dtype=float32",
        f"rollout.max_new_tokens={NEW_TOKENS}", "learner.precision=fp32", "learner.zero_stage=2", "learner.lr=5e-2",
        "learner.micro_batch_size=4", "learner.max_seq_len=96", "algo.loss=sigmoid", "sync.verify=true",
        "sync.bucket_size_mb=0.25"])
    placements = place_roles(cfg, roles=("learner", "rollout"))
    weight_sync = WeightSync(cfg.sync, rollout_gpus=1, colocated=True)
    assert weight_sync.transport.name == "ipc"
    manager = learner = None
    try:
        manager = RolloutManager(str(model_dir), cfg.rollout, placement=placements["rollout"], colocated=True)
        learner = LearnerGroup(str(model_dir), cfg.learner, cfg.algo, cfg.cluster.learner,
                               placement=placements["learner"], bucket_bytes=weight_sync.bucket_bytes)
        turns = Turns(enabled=True, sleep_level=cfg.rollout.vllm.sleep_level)
        before = _engine_greedy(manager)
        turns.start(learner)
        free_awake = torch.cuda.mem_get_info()[0]
        turns.to_learner(manager, learner)
        assert turns.last["rollout_sleep"][0]["slept"] is True
        assert torch.cuda.mem_get_info()[0] > free_awake + (256 << 20)  # the KV cache (0.3 of the GPU) went back
        _step(learner)
        want = _learner_greedy(learner)
        turns.to_rollout(manager, learner, lambda: weight_sync.push(learner.ranks, manager, 1), generates=True)
        assert weight_sync.last_report["transport"] == "ipc" and policy_versions(manager) == [1]
        assert "lp_params" in turns.last["learner_offload_weights"][0]["moved"]
        after = _engine_greedy(manager)
        assert after != before and after == want
    finally:
        _shutdown(weight_sync, manager, learner)
        remove_placement_groups(placements)
