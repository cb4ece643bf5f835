"""Placement planning, the fit check and its messages: pure logic, no Ray cluster."""

import os
import socket
import subprocess
import sys

import pytest

from rayscale.config import NODE_RESOURCE_SHARE
from rayscale.config_loading import load_config
from rayscale.errors import ConfigError
from rayscale.plan import (
    ROLES,
    PlacementError,
    format_nodes,
    format_plan,
    nodes_from_ray,
    plan_placement,
    require_fit,
    simulate,
)
from tests.nodes import node

GPU_ROLLOUT = ["rollout.backend=vllm", "cluster.rollout.num_gpus=2", "rollout.vllm.tensor_parallel_size=2"]


def plan(*overrides):
    return plan_placement(load_config(None, list(overrides)))


def test_default_plan_one_bundle_per_actor_in_creation_order():
    p = plan()
    assert [rp.role for rp in p.roles] == [r for r in ROLES if r != "weak_rollout"]  # no weak model asked for
    assert [rp.count for rp in p.roles] == [2, 1, 1, 2]  # learner ranks, rollout workers, teacher, verifiers
    assert p.role("learner").bundles == [{"CPU": 1.0}, {"CPU": 1.0}]
    assert p.role("verifier").bundle == {"CPU": 0.5}
    assert p.total() == {"CPU": 4.5}


def test_a_weak_supervisor_model_gets_a_rollout_bundle_of_its_own():
    w2s = ["algo.strategy={weak_to_strong: 0.5, correction: 0.5}", "algo.weak_to_strong.weak_model=org/weak"]
    p = plan(*w2s, "cluster.rollout.num_gpus=1", "rollout.backend=vllm")
    assert [rp.role for rp in p.roles] == list(ROLES)
    assert p.role("weak_rollout").count == 1 and p.role("weak_rollout").bundle == p.role("rollout").bundle
    # a fixed answers file needs no model, and neither does a run whose strategy never asks the weak supervisor
    from_file = plan(w2s[0], "algo.weak_to_strong.weak_answers_file=a.jsonl")
    assert "weak_rollout" not in [rp.role for rp in from_file.roles]
    assert "weak_rollout" not in [rp.role for rp in plan("algo.weak_to_strong.weak_model=org/weak").roles]


def test_api_and_oracle_teachers_reserve_no_gpu_local_one_does():
    for backend in ("oracle", "openai"):
        assert "GPU" not in plan(f"teacher.backend={backend}", "cluster.teacher.num_gpus=1").role("teacher").bundle
    local = plan("teacher.backend=local", "cluster.teacher.num_gpus=1").role("teacher")
    assert local.bundle["GPU"] == 1 and local.count == 1


def test_vllm_worker_reserves_its_tensor_parallel_gpus_in_one_bundle():
    rp = plan(*GPU_ROLLOUT, "rollout.num_workers=8").role("rollout")
    assert rp.count == 8 and rp.bundle["GPU"] == 2 and "tensor_parallel_size=2" in rp.note


def test_vllm_on_cpu_plans_without_gpus_and_syncs_over_gloo():
    cfg = load_config(None, ["rollout.backend=vllm"])
    rp = plan_placement(cfg).role("rollout")
    assert "GPU" not in rp.bundle and "vLLM on CPU" in rp.note
    assert cfg.sync.resolve_backend(cfg.cluster.rollout.num_gpus) == "gloo"
    assert cfg.sync.resolve_backend(1) == "nccl"
    teacher = plan("teacher.backend=local", "teacher.local.backend=vllm").role("teacher")
    assert "GPU" not in teacher.bundle and "CPU" in teacher.note


@pytest.mark.parametrize("overrides, words", [
    (["rollout.backend=vllm", "rollout.vllm.tensor_parallel_size=2"],
     ["cluster.rollout.num_gpus=0", "tensor_parallel_size=2", "set cluster.rollout.num_gpus=2", "CPU"]),
    (["rollout.backend=vllm", "rollout.vllm.tensor_parallel_size=4", "cluster.rollout.num_gpus=2"],
     ["cluster.rollout.num_gpus=2", "tensor_parallel_size=4", "on one node"]),
    (["cluster.learner.num_gpus=2"], ["cluster.learner.num_gpus=2", "learner.num_ranks"]),
    (["rollout.device=cuda"], ["rollout.device=cuda", "cluster.rollout.num_gpus=0"]),
    (["cluster.rollout.num_gpus=1.5"], ["cluster.rollout", "GPU=1.5", "whole numbers"]),
    (["cluster.verifier.num_cpus=0"], ["cluster.verifier reserves nothing"]),
    (["teacher.backend=local", "teacher.local.backend=vllm", "cluster.teacher.num_gpus=0.5"],
     ["cluster.teacher.num_gpus=0.5", "whole GPU", "0: vLLM on CPU"]),
])
def test_impossible_resources_are_config_errors_naming_the_keys(overrides, words):
    with pytest.raises(ConfigError) as e:
        plan(*overrides)
    for w in words:
        assert w in str(e.value)


def test_node_resource_is_a_sliver_of_a_label_and_cannot_double_a_resources_key():
    rp = plan("cluster.rollout.node_resource=gen_node").role("rollout")
    assert rp.bundle["gen_node"] == NODE_RESOURCE_SHARE
    with pytest.raises(ConfigError, match="gen_node"):
        load_config(None, ["cluster.rollout.node_resource=gen_node", "cluster.rollout.resources={gen_node: 1}"])


def test_actors_reserve_what_the_plan_reserves():
    """The plan, the actors' placement-group bundles and their actor options agree: node affinity that only the
    plan knew about once let rollout workers land on the head node."""
    cfg = load_config(None, ["cluster.rollout.node_resource=gen_node", "cluster.rollout.resources={fast: 0.5}",
                             "cluster.learner.node_resource=train_node"])
    for role in ("rollout", "learner"):
        res = getattr(cfg.cluster, role)
        assert res.bundle() == plan_placement(cfg).role(role).bundle
        assert res.actor_options()["resources"] == {k: v for k, v in res.bundle().items() if k not in ("CPU", "GPU")}
    assert cfg.cluster.rollout.bundle() == {"CPU": 1.0, "fast": 0.5, "gen_node": NODE_RESOURCE_SHARE}
    assert cfg.cluster.teacher.actor_options()["resources"] is None  # no custom resources: Ray's default


def test_shortfall_names_role_need_free_and_what_earlier_roles_took():
    p = plan(*GPU_ROLLOUT, "rollout.num_workers=8", "learner.num_ranks=8", "cluster.learner.num_gpus=1")
    nodes = [node("a" * 16, CPU=96, GPU=8), node("b" * 16, CPU=96, GPU=8)]
    shortfalls = simulate(p, nodes).shortfalls
    assert [(s.role, s.resource, s.short) for s in shortfalls] == [("rollout", "GPU", 8.0)]
    assert shortfalls[0].message == ("rollout needs 16 GPU (8 workers x 2 GPU) but the cluster has 8 GPU free "
                                     "after learner (8); short by 8 GPU")
    with pytest.raises(PlacementError) as e:
        require_fit(p, nodes)
    assert isinstance(e.value, ValueError) and e.value.shortfalls == shortfalls
    assert "in all the run asks for 24 GPU" in str(e.value) and "have 16 GPU" in str(e.value)
    assert simulate(p, nodes + [node("c" * 16, CPU=96, GPU=8)]).shortfalls == []


def test_tensor_parallel_bundles_never_span_nodes():
    # 9 GPUs in total hold 8, but three 3-GPU nodes hold only three 2-GPU workers.
    p = plan(*GPU_ROLLOUT, "rollout.num_workers=4")
    nodes = [node(f"n{i}" * 8, CPU=16, GPU=3) for i in range(3)]
    a = simulate(p, nodes)
    assert a.bundles["rollout"].count(None) == 1
    (s,) = a.shortfalls
    assert (s.role, s.resource, s.short) == ("rollout", "GPU", 2.0)
    assert "on ONE node" in s.message and "1 of 4 workers do not fit" in s.message and "tensor_parallel" in s.message


def test_pack_uses_one_node_when_it_can_scored_as_ray_scores_nodes():
    # Ray's scorer: the node with the largest fraction of the asked resources left afterwards.
    p = plan("learner.num_ranks=2", "cluster.learner.num_gpus=1", "verifier.num_workers=1")
    small, big = node("small" * 3, CPU=8, GPU=2), node("big" * 4, CPU=64, GPU=8)
    a = simulate(p, [small, big])
    assert a.bundles["learner"] == [big.node_id] * 2
    # Only asked resources count: CPU-only bundles go where the larger share of CPUs is left (ties: node order).
    cpu = simulate(plan("learner.num_ranks=1", "verifier.num_workers=1", "cluster.verifier.num_cpus=4"),
                   [node("a" * 8, CPU=8), node("b" * 8, CPU=8)])
    assert cpu.bundles["learner"] == ["a" * 8] and cpu.bundles["verifier"] == ["b" * 8]


def test_pack_spills_over_nodes_but_strict_pack_does_not():
    nodes = [node("x" * 8, CPU=8, GPU=2), node("y" * 8, CPU=8, GPU=2)]
    packed = simulate(plan("learner.num_ranks=4", "cluster.learner.num_gpus=1"), nodes)
    assert packed.fits and sorted(packed.bundles["learner"]) == ["x" * 8] * 2 + ["y" * 8] * 2
    (s,) = simulate(plan("learner.num_ranks=4", "cluster.learner.num_gpus=1",
                           "cluster.learner.strategy=STRICT_PACK"), nodes).shortfalls
    assert s.role == "learner" and s.resource == "GPU" and s.short == 2
    assert "STRICT_PACK" in s.message and "share one node" in s.message


def test_spread_balances_and_strict_spread_needs_distinct_nodes():
    nodes = [node("p" * 8, CPU=8), node("q" * 8, CPU=8)]
    spread = simulate(plan("verifier.num_workers=4", "cluster.verifier.strategy=SPREAD"), nodes)
    assert sorted(spread.bundles["verifier"]) == ["p" * 8, "p" * 8, "q" * 8, "q" * 8]
    (s,) = simulate(plan("verifier.num_workers=3", "cluster.verifier.strategy=STRICT_SPREAD"), nodes).shortfalls
    assert (s.role, s.resource, s.short) == ("verifier", "node", 1) and "3 distinct nodes" in s.message


def test_node_affinity_keeps_roles_on_their_nodes_and_names_a_missing_label():
    p = plan(*GPU_ROLLOUT, "rollout.num_workers=4", "cluster.rollout.node_resource=gen_node",
             "learner.num_ranks=8", "cluster.learner.num_gpus=1", "cluster.learner.node_resource=train_node")
    gen, train, head = node("gen" * 4, CPU=96, GPU=8, gen_node=1), node("trn" * 4, CPU=96, GPU=8, train_node=1), \
        node("hed" * 4, CPU=8, is_head=True)
    a = simulate(p, [head, gen, train])
    assert a.fits and set(a.bundles["rollout"]) == {gen.node_id} and set(a.bundles["learner"]) == {train.node_id}
    (s,) = simulate(p, [head, gen, node("trn" * 4, CPU=96, GPU=8)]).shortfalls
    assert s.role == "learner" and s.resource == "train_node" and "no alive node has it" in s.message
    # With the label present but too few GPUs behind it, the scope of the count is the labelled nodes.
    (s,) = simulate(p, [head, gen, node("trn" * 4, CPU=96, GPU=4, train_node=1), node("spare" * 3, GPU=8, CPU=9)]).shortfalls
    assert s.message.startswith("learner needs 8 GPU (8 ranks x 1 GPU) but the nodes with train_node have 4 GPU")


def test_nodes_from_ray_keeps_alive_nodes_and_real_resources():
    raw = [
        {"NodeID": "h" * 56, "Alive": True, "NodeManagerAddress": "10.0.0.1",
         "Resources": {"CPU": 8.0, "memory": 1e10, "object_store_memory": 1e9, "node:10.0.0.1": 1.0,
                       "node:__internal_head__": 1.0}},
        {"NodeID": "w" * 56, "Alive": True, "NodeManagerAddress": "10.0.0.2",
         "Resources": {"CPU": 16.0, "GPU": 8.0, "gen_node": 1.0, "accelerator_type:H100": 1.0}},
        {"NodeID": "d" * 56, "Alive": False, "NodeManagerAddress": "10.0.0.3", "Resources": {"GPU": 8.0}},
    ]
    available = {"w" * 56: {"CPU": 4.0, "gen_node": 1.0, "CPU_group_abc": 12.0}}  # GPUs all taken: key absent
    head, worker = nodes_from_ray(raw, available)
    assert head.is_head and head.total == {"CPU": 8.0} and head.free == {"CPU": 8.0}
    assert worker.total == {"CPU": 16.0, "GPU": 8.0, "gen_node": 1.0, "accelerator_type:H100": 1.0}
    assert worker.free == {"CPU": 4.0, "gen_node": 1.0}


def test_format_plan_and_nodes_say_which_actor_goes_where():
    nodes = [node("aaaaaaaa1111", "10.0.0.1", is_head=True, CPU=4), node("bbbbbbbb2222", "10.0.0.2", CPU=2, GPU=2)]
    p = plan(*GPU_ROLLOUT, "rollout.num_workers=2", "verifier.num_workers=3")
    text = format_plan(p, simulate(p, nodes))
    assert "rollout     2 workers  x {GPU 2, CPU 1}  PACK" in text
    assert "worker 0         -> node bbbbbbbb (10.0.0.2)" in text
    assert "worker 1         -> NOT PLACED" in text
    assert "workers 0-2      -> node aaaaaaaa (10.0.0.1)" in text  # consecutive actors on one node: one line
    assert "aaaaaaaa 10.0.0.1        head CPU 4/4" in format_nodes(nodes)
    assert "->" not in format_plan(p)  # without a cluster: bundles only


def test_dry_run_prints_the_plan(tmp_path, capsys):
    from rayscale.cli import main

    assert main(["train", "--dry-run", f"tracking.run_dir={tmp_path}", "data.synthetic.train_size=50"]) == 0
    out = capsys.readouterr().out
    assert "placement plan" in out and "learner     2 ranks" in out and "total: 4.5 CPU" in out


def _cli(*args, timeout=60):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "RAY_ADDRESS": ""}
    return subprocess.run([sys.executable, "-m", "rayscale.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_status_without_a_cluster_says_so_without_a_traceback():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = _cli("status", "--address", f"127.0.0.1:{port}")
    assert r.returncode == 2, r.stderr
    assert "no Ray cluster answers" in r.stderr and "Traceback" not in r.stderr


def test_status_rejects_a_bad_config_before_connecting():
    r = _cli("status", "rollout.backend=vllm", "rollout.vllm.tensor_parallel_size=2", "--address", "127.0.0.1:1")
    assert r.returncode == 2 and "cluster.rollout.num_gpus" in r.stderr and "Traceback" not in r.stderr


def test_a_run_checks_the_fit_once_where_it_reserves(monkeypatch):
    """Joining the cluster checks no fit; `place_roles` checks the plan it reserves, before any placement group."""
    import ray

    from rayscale import cluster
    from rayscale.actors import placement

    cfg = load_config(None, ["cluster.rollout.num_cpus=64"])
    asked = []

    def nodes():
        asked.append("nodes")
        return [node("a" * 16, CPU=8)]

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(cluster, "cluster_nodes", nodes)
    monkeypatch.setattr(placement, "cluster_nodes", nodes)
    monkeypatch.setattr(placement, "placement_group", lambda *a, **kw: pytest.fail("reserved before the check"))
    cluster.start_or_join(cfg)
    assert asked == []
    with pytest.raises(PlacementError, match="rollout needs 64 CPU"):
        placement.place_roles(cfg)
    assert asked == ["nodes"]
