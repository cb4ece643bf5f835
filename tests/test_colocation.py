"""cluster.colocate: rollout worker i in learner rank i's bundle, the two taking turns (rayscale.colocation).

On a CPU nothing is freed (vLLM cannot sleep, a CPU rank's memory is host memory) but every hand-over runs and
each actor refuses work while its share is handed over, so these tests fail if the controller gets the order
wrong; the GPU variant (real sleep, DeepSpeed offload_states, CUDA IPC) is in test_rollout_gpu.py.
"""

from __future__ import annotations

import time

import pytest

from rayscale.colocation import ENGINE_PARTS, LEARNER_PARTS, ColocationError, Holdings, Turns
from rayscale.config_loading import load_config
from rayscale.errors import ConfigError
from rayscale.plan import format_plan, plan_placement, simulate
from tests.nodes import node

COLOCATED = ["cluster.colocate=true", "rollout.num_workers=2", "learner.num_ranks=2"]


# ------------------------------------------------------------------ pure: holdings and the order of the hand-overs
def test_an_actor_refuses_work_while_its_share_is_handed_over():
    engine = Holdings("rollout worker 0", ENGINE_PARTS)
    engine.require("generate")
    engine.release()
    with pytest.raises(ColocationError, match="rollout worker 0: asked to generate while its weights and kv_cache"):
        engine.require("generate")
    engine.take(["weights"])
    engine.require("receive weights", ["weights"])  # weights back: a sync may land, generation may not
    with pytest.raises(ColocationError, match="kv_cache"):
        engine.require("generate")
    engine.take(["kv_cache"])
    engine.require("generate")
    assert engine.report() == {"held": ["kv_cache", "weights"], "releases": 1}
    with pytest.raises(ValueError, match="unknown part"):
        engine.take(["optimizer"])


def test_a_two_step_offload_counts_as_one_hand_over():
    learner = Holdings("learner rank 1", LEARNER_PARTS)
    learner.release(["states"])
    learner.require("send its weights", ["weights"])
    with pytest.raises(ColocationError, match="states"):
        learner.require("train")
    learner.release(["weights"])
    learner.release(["weights"])  # nothing left to give: not another hand-over
    assert learner.report() == {"held": [], "releases": 1}


class Recorder:
    """A rollout manager and a learner group in one: every call in order, answered like the real ones."""

    def __init__(self):
        self.calls: list[str] = []

    def sleep(self, level):
        self.calls.append(f"sleep {level}")
        return [{"slept": False}]

    def wake_up(self, tags):
        self.calls.append("wake " + ",".join(tags))
        return [{"woke": []}]

    def offload(self, parts):
        self.calls.append("offload " + ",".join(parts))
        return [{"moved": []}]

    def reload(self):
        self.calls.append("reload")
        return [{"moved": []}]

    def sync(self):
        self.calls.append("sync")


@pytest.mark.parametrize("generates", [False, True])
def test_the_learner_lets_go_before_each_engine_allocation(generates):
    r = Recorder()
    turns = Turns(enabled=True, sleep_level=1)
    turns.start(r)
    turns.to_learner(r, r)
    turns.to_rollout(r, r, r.sync, generates=generates)
    learner_turn = ["offload states,weights", "sleep 1", "reload", "offload states", "wake weights"]
    if generates:  # the output check generates and the learner scores it: KV cache up, learner weights kept
        assert r.calls == [*learner_turn, "wake kv_cache", "sync", "offload weights"]
    else:
        assert r.calls == [*learner_turn, "sync", "offload weights", "wake kv_cache"]
    assert set(turns.last) == {"rollout_sleep", "learner_reload", "learner_offload_states", "rollout_wake_weights",
                               "learner_offload_weights", "rollout_wake_kv_cache"}


def test_without_colocation_only_the_sync_runs():
    r = Recorder()
    turns = Turns(enabled=False)
    turns.start(r)
    turns.to_learner(r, r)
    turns.to_rollout(r, r, r.sync)
    with turns.learner_holds(r, r, r.sync):
        pass
    assert r.calls == ["sync"] and turns.last == {}


@pytest.mark.parametrize("level, resynced", [(1, False), (2, True)])
def test_a_checkpoint_turn_rewrites_the_weights_only_where_sleep_freed_them(level, resynced):
    r = Recorder()
    turns = Turns(enabled=True, sleep_level=level)
    with turns.learner_holds(r, r, r.sync):
        r.calls.append("save")
    assert ("sync" in r.calls) is resynced
    assert r.calls.index("save") < r.calls.index("offload states") and r.calls[-1] == "wake kv_cache"


# ------------------------------------------------------------------ config and plan
@pytest.mark.parametrize("overrides, message", [
    (["cluster.colocate=true", "rollout.num_workers=1", "learner.num_ranks=2"],
     r"rollout.num_workers \(1\) must equal learner.num_ranks \(2\)"),
    ([*COLOCATED, "algo.async_rollout=true"], "set algo.async_rollout: false"),
    ([*COLOCATED, "rollout.backend=vllm", "rollout.vllm.tensor_parallel_size=2", "cluster.rollout.num_gpus=2",
      "cluster.learner.num_gpus=1"], "tensor_parallel_size must be 1"),
    ([*COLOCATED, "cluster.learner.num_gpus=1"], "both roles must hold the GPU they share, or neither"),
    ([*COLOCATED, "cluster.learner.node_resource=gpu_node"], "node_resource must be the same"),
    (["sync.transport=ipc"], "needs cluster.colocate: true"),
])
def test_configs_that_cannot_colocate_are_refused_at_load(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_auto_transport_is_ipc_only_when_colocated():
    assert load_config(None, COLOCATED).sync.resolve_transport(colocated=True) == "ipc"
    assert load_config(None).sync.resolve_transport(colocated=False) == "broadcast"
    assert load_config(None, [*COLOCATED, "sync.transport=broadcast"]).sync.resolve_transport(True) == "broadcast"


def test_a_colocated_plan_reserves_one_bundle_per_rank_holding_both_actors():
    cfg = load_config(None, [*COLOCATED, "cluster.learner.num_cpus=1", "cluster.rollout.num_cpus=0.5",
                             "cluster.learner.num_gpus=1", "cluster.rollout.num_gpus=1"])
    plan = plan_placement(cfg)
    learner, rollout = plan.role("learner"), plan.role("rollout")
    assert learner.bundle == {"CPU": 1.5, "GPU": 1.0}  # both processes' CPUs, ONE GPU between them
    assert learner.actor_request == {"CPU": 1.0, "GPU": 0.5} and rollout.actor_request == {"CPU": 0.5, "GPU": 0.5}
    assert rollout.shares == "learner" and rollout.total() == {}
    assert plan.total()["GPU"] == 2.0  # 2 GPUs for 2 ranks + 2 engines; split roles would need 4
    two_gpus = [node("n1", CPU=8, GPU=2)]
    assert simulate(plan, two_gpus).shortfalls == []
    split = load_config(None, ["rollout.num_workers=2", "learner.num_ranks=2", "cluster.learner.num_gpus=1",
                               "cluster.rollout.num_gpus=1"])
    assert [s.role for s in simulate(plan_placement(split), two_gpus).shortfalls] == ["rollout"]
    assert "rollout     2 workers  x {GPU 0.5, CPU 0.5}  in learner's bundles" in format_plan(plan)
    alone = plan.only("rollout", "verifier").role("rollout")  # `rayscale eval`: no learner to share with
    assert alone.shares is None and alone.bundle == {"CPU": 0.5, "GPU": 1.0}


# ------------------------------------------------------------------ on Ray: placement, and the loop itself
@pytest.mark.ray
def test_a_bucket_handed_over_in_memory_is_checked_against_the_senders_sum(local_ray):
    import json

    import torch

    from rayscale.sync.transports import IPCTransport
    from rayscale.wire.buckets import iter_buckets
    from rayscale.wire.handover import stamp, to_bytes
    from rayscale.wire.receiver import SyncError

    bucket = stamp(next(iter_buckets([("w", torch.arange(6, dtype=torch.float32))], 1 << 20)), verify=True)
    meta_json, payload = IPCTransport._put(*to_bytes(bucket))  # a CPU bucket: into the node's object store
    got = IPCTransport._fetched(meta_json, payload, verify=True)
    assert torch.equal(got.flat, torch.arange(6, dtype=torch.float32))
    wrong = json.dumps({**json.loads(meta_json), "checksum": json.loads(meta_json)["checksum"] + 1})
    with pytest.raises(SyncError, match="bucket 0: checksum mismatch after the hand-over"):
        IPCTransport._fetched(wrong, payload, verify=True)
    IPCTransport._fetched(wrong, payload, verify=False)  # unchecked unless sync.verify


@pytest.mark.ray
def test_colocated_actors_share_the_learners_placement_group(local_ray, tiny_model_dir):
    import ray
    from ray.util import placement_group_table

    from rayscale.actors.learner import LearnerGroup
    from rayscale.actors.placement import place_roles, remove_placement_groups
    from rayscale.actors.rollout import RolloutManager

    cfg = load_config(None, [*COLOCATED, "cluster.learner.num_cpus=0.5", "cluster.rollout.num_cpus=0.5",
                             "cluster.teacher.num_cpus=0.1", "cluster.verifier.num_cpus=0.1",
                             "verifier.num_workers=1", "learner.zero_stage=0"])
    placements = place_roles(cfg)
    try:
        groups = {g["name"] for g in placement_group_table().values() if g["state"] == "CREATED"}
        assert "rayscale-learner" in groups and "rayscale-rollout" not in groups
        rollout = RolloutManager(tiny_model_dir, cfg.rollout, placement=placements["rollout"], colocated=True)
        learner = LearnerGroup(tiny_model_dir, cfg.learner, cfg.algo, cfg.cluster.learner,
                               placement=placements["learner"])
        try:
            where = ray.get([a.location.remote() for a in [*learner.ranks, *rollout.workers]])
            assert len({w["placement_group"] for w in where}) == 1  # all four in the learner's one group
            assert where[0]["placement_group"] == placements["learner"].group.id.hex()
            rollout.sleep(1)
            with pytest.raises(ColocationError, match="rollout worker 0: asked to generate"):
                ray.get(rollout.workers[0].generate.remote([]))
        finally:
            rollout.shutdown()
            learner.shutdown()
    finally:
        remove_placement_groups(placements)
        # Ray frees killed actors' and removed groups' CPUs asynchronously: the next test's fit check needs them
        deadline = time.monotonic() + 60
        while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.mark.ray
def test_a_colocated_run_hands_over_every_iteration_and_syncs_in_place(tmp_path):
    """Three iterations, a checkpoint turn after the second, sync.verify (engine greedy == learner greedy after
    every sync through the ipc transport); every actor's own report counts the hand-overs it made."""
    import json

    from rayscale.controller import Trainer
    from rayscale.run_setup import prepare_run
    from tests.test_loop import TINY

    cfg = load_config(None, [*TINY, *COLOCATED, f"tracking.run_dir={tmp_path}", "algo.iterations=3",
                             "algo.eval_every=3", "checkpoint.every=2", "sync.verify=true", "algo.sft.steps=50"])
    assert Trainer(cfg, prepare_run(cfg)).run() == 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()][1:]  # 0: eval
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    for r in rows:
        turn = r["colocate"]
        assert r["sync/transport"] == "ipc"
        assert {"hand_over", "train", "sync"} <= set(r["time"])
        # every worker slept once more each iteration (plus once for the checkpoint turn after iteration 2)
        expected = r["iteration"] + (r["iteration"] > 2)
        assert [w["releases"] for w in turn["rollout_sleep"]] == [expected] * 2
        assert [w["held"] for w in turn["rollout_wake_kv_cache"]] == [["kv_cache", "weights"]] * 2
        assert [w["held"] for w in turn["learner_offload_weights"]] == [[]] * 2
        assert all(w["slept"] is False for w in turn["rollout_sleep"])  # HF on CPU: nothing to free, said so
    assert (tmp_path / "final_model" / "config.json").is_file()
