"""Rollout workers and weight sync on a real two-node Ray cluster (ray.cluster_utils.Cluster on this machine).

Layout: node0 holds the stand-in learner and worker 0, node1 holds worker 1 (STRICT_SPREAD), so every sync crosses
nodes. The cluster, learner, manager and weight-sync coordinator are built once for the module; the tests run in
order and build on each other's versions, as a training run would.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ray

ray = pytest.importorskip("ray")

import torch  # noqa: E402

from rayscale.config import RoleResources, RolloutConfig, SyncConfig, TinyModelConfig  # noqa: E402
from rayscale.types import RolloutRequest  # noqa: E402
from tests.actor_state import policy_versions  # noqa: E402
from tests.ray_faults import kill_and_wait_dead  # noqa: E402

PROMPTS = ["<|user|>3+4*2<|assistant|>", "<|user|>12-5<|assistant|>", "<|user|>7*7-1<|assistant|>"]
NEW_TOKENS = 12
STEP_TEXT = "<|user|>3+4*2<|assistant|>zzzzzzzzzzzzzzzzzzzz</s>"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from rayscale.models import make_tiny_model

    cfg = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, seed=3)
    return str(make_tiny_model(tmp_path_factory.mktemp("rollout") / "model", cfg))


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # a connection left by an earlier module would shadow the two-node cluster
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"node0": 1}})
    c.add_node(num_cpus=2, resources={"node1": 1})
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def weight_sync():
    from rayscale.sync.coordinator import WeightSync

    coordinator = WeightSync(SyncConfig(bucket_size_mb=0.05, verify=True, timeout_s=60), rollout_gpus=0)
    yield coordinator
    coordinator.close()


@pytest.fixture(scope="module")
def learner(cluster, model_dir, weight_sync):
    from tests.toy_learner import ToyLearner

    actor = ray.remote(ToyLearner).options(num_cpus=1, resources={"node0": 0.1}).remote(
        model_dir, lr=0.5, bucket_bytes=weight_sync.bucket_bytes)
    ray.get(actor.ready.remote())
    return actor


@pytest.fixture(scope="module")
def manager(cluster, model_dir, weight_sync):
    from rayscale.actors.rollout import RolloutManager

    m = RolloutManager(model_dir, RolloutConfig(num_workers=2, max_new_tokens=NEW_TOKENS, batch_size=4),
                       resources_cfg=RoleResources(num_cpus=1, strategy="STRICT_SPREAD"))
    yield m
    weight_sync.close()  # before the workers go: their group handles are closed while they are alive
    m.shutdown()


def _greedy(manager) -> list[str]:
    out = manager.generate([RolloutRequest(f"g{i}", p, temperature=0.0) for i, p in enumerate(PROMPTS)])
    return [samples[0].text for samples in out]


def _assert_workers_equal_learner(manager, learner, version: int) -> None:
    assert policy_versions(manager) == [version] * len(manager.workers)
    want = ray.get(learner.get_state_checksum.remote())
    for got in ray.get([w.get_state_checksum.remote() for w in manager.workers]):
        assert got == want  # every tensor, bit for bit
    assert _greedy(manager) == ray.get(learner.greedy.remote(PROMPTS, NEW_TOKENS))


def test_workers_are_on_two_nodes_and_results_come_back_in_input_order(manager, learner):
    nodes = {info["node_id"] for info in manager.infos}
    assert len(nodes) == 2
    assert ray.get(learner.ready.remote())["node_id"] in nodes
    requests = [RolloutRequest(f"p{i}", PROMPTS[i % 3], n=1 + i % 3, seed=i) for i in range(7)]
    out = manager.generate(requests)
    assert [[s.prompt_id for s in samples] for samples in out] == [[r.prompt_id] * r.n for r in requests]
    assert all(s.policy_version == 0 and 0 < len(s.token_ids) <= NEW_TOKENS for samples in out for s in samples)
    assert manager.generate(requests[2:3])[0][0].text == out[2][0].text  # seeded: same on whichever worker


def test_broadcast_sync_after_a_learner_step_makes_every_worker_the_learner(manager, learner, weight_sync):
    assert manager.on_restart is None  # nothing synced yet: a restarted worker's model_path is current
    before = _greedy(manager)
    ray.get(learner.train_step.remote(STEP_TEXT))
    report = weight_sync.push(learner, manager, 1)
    assert report["version"] == 1 and report["buckets"] > 1  # 0.05 MB buckets: several per sync
    _assert_workers_equal_learner(manager, learner, 1)
    assert _greedy(manager) != before  # the step changed what the policy says


def test_object_store_sync_then_broadcast_again_versions_increment(manager, learner, weight_sync):
    ray.get(learner.train_step.remote(STEP_TEXT))
    report = weight_sync.push(learner, manager, 2, transport="object_store")
    assert report["bytes"] > 0 and weight_sync.last_report is report  # what `rayscale bench` reads
    _assert_workers_equal_learner(manager, learner, 2)
    ray.get(learner.train_step.remote(STEP_TEXT))
    broadcast = weight_sync.push(learner, manager, 3)
    assert broadcast["planned"]  # the layout is known from sync 1: announced up front
    assert broadcast["bytes"] == report["bytes"]  # the same parameter bytes, either transport
    _assert_workers_equal_learner(manager, learner, 3)


def test_a_restarted_worker_gets_the_current_weights_before_it_generates(manager, learner, weight_sync):
    assert manager.on_restart is not None  # set by the coordinator's pushes: the catch-up hook
    old = manager.infos[1]["pid"]
    manager.restart_worker(1)
    assert manager.infos[1]["pid"] != old
    _assert_workers_equal_learner(manager, learner, 3)
    # a worker that dies is replaced by generate itself, again at the current version
    dead = manager.workers[0]
    kill_and_wait_dead(dead)
    assert _greedy(manager) == ray.get(learner.greedy.remote(PROMPTS, NEW_TOKENS))
    assert manager.workers[0] is not dead
    _assert_workers_equal_learner(manager, learner, 3)
    # and the broadcast group is rebuilt around the new members for the next sync
    ray.get(learner.train_step.remote(STEP_TEXT))
    weight_sync.push(learner, manager, 4)
    _assert_workers_equal_learner(manager, learner, 4)


def test_a_changed_bucket_layout_costs_one_retried_sync_not_a_failure(manager, learner, weight_sync):
    ray.get(learner.train_step.remote(STEP_TEXT))
    # behind the coordinator's back: the layout the sender announces from sync 4 no longer matches what it packs
    ray.get(learner.set_bucket_bytes.remote(int(0.02 * (1 << 20))))
    report = weight_sync.push(learner, manager, 5)
    assert not report["planned"]  # the first attempt failed cleanly on both sides; the retry streamed
    _assert_workers_equal_learner(manager, learner, 5)


def test_close_forgets_the_last_sync_and_the_next_push_builds_a_new_group(manager, learner, weight_sync):
    weight_sync.close()
    assert weight_sync.version == 0 and weight_sync._group_key is None
    ray.get(learner.train_step.remote(STEP_TEXT))
    weight_sync.push(learner, manager, 6)
    _assert_workers_equal_learner(manager, learner, 6)


def _learner_state(actor) -> tuple[dict, bool]:
    """(the stand-in learner's state dict, whether its LM head is its embedding)."""
    model = actor.model
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    return {n: t.detach().clone() for n, t in model.state_dict().items()}, tied


@pytest.mark.parametrize("transport", ["broadcast", "object_store", "ipc"])
def test_a_sync_restores_scrambled_engines_exactly(manager, learner, weight_sync, transport):
    """Scramble-and-restore (tests/scramble.py): noise into every worker's weights, one sync, then every tensor of
    every worker is the learner's, the tied embedding / LM head included. ipc pairs one sender per worker; the
    stand-in learner plays every rank."""
    from tests.scramble import engine_weights, mismatches, scramble

    state, tied = ray.get(learner.__ray_call__.remote(_learner_state))
    assert tied and "lm_head.weight" in state
    specs = [(n, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in state.items()]
    assert ray.get([w.__ray_call__.remote(scramble, specs, 11) for w in manager.workers]) == [len(specs)] * 2
    scrambled = ray.get(manager.workers[0].__ray_call__.remote(engine_weights))
    assert len(mismatches(scrambled, state, torch.float32)) == len(scrambled)  # the noise reached every tensor
    version = weight_sync.version + 1
    senders = [learner] * len(manager.workers) if transport == "ipc" else learner
    weight_sync.push(senders, manager, version, transport=transport)
    for w in manager.workers:
        engine = ray.get(w.__ray_call__.remote(engine_weights))
        assert set(engine) == set(state) and mismatches(engine, state, torch.float32) == []
    assert policy_versions(manager) == [version] * 2
