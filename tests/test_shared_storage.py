"""The start-up check that every node that may host an actor sees the run directory (rayscale.cluster): which paths,
which nodes, and what one node's probe reports. The check across real hosts: tests/test_multihost.py."""

from __future__ import annotations

from rayscale.cluster import _probe_paths, nodes_for_plan, shared_paths
from rayscale.config_loading import load_config
from rayscale.models import make_tiny_model
from rayscale.plan import plan_placement
from tests.nodes import node

probe = _probe_paths._function  # the task's body, run here


def test_the_run_dir_checkpoint_dir_and_local_models_are_checked(tmp_path):
    model = make_tiny_model(tmp_path / "model")
    cfg = load_config(None, [f"tracking.run_dir={tmp_path}/run", f"checkpoint.dir={tmp_path}/ckpt",
                             f"model.path={model}", "model.ref_path=HuggingFaceTB/SmolLM2-135M-Instruct"])
    assert shared_paths(cfg) == {"tracking.run_dir": (f"{tmp_path}/run", True),
                                 "checkpoint.dir": (f"{tmp_path}/ckpt", True),
                                 "model.path": (str(model), False)}  # a hub id is not a path to share


def test_only_nodes_that_can_hold_a_role_are_probed():
    plan = plan_placement(load_config(None, ["cluster.rollout.node_resource=gen_node",
                                             "cluster.learner.node_resource=train_node",
                                             "cluster.teacher.node_resource=train_node",
                                             "cluster.verifier.node_resource=train_node"]))
    nodes = [node("head", CPU=8, train_node=1), node("gen", CPU=2, gen_node=1), node("other", CPU=64, db=1)]
    assert [n.node_id for n in nodes_for_plan(plan, nodes)] == ["head", "gen"]


def test_a_node_reports_a_missing_a_foreign_and_a_good_directory(tmp_path):
    good, foreign = tmp_path / "good", tmp_path / "foreign"
    good.mkdir()
    foreign.mkdir()
    (good / ".m1").write_text(".m1")
    (foreign / ".m2").write_text("written by another driver")
    model = tmp_path / "model"
    model.mkdir()
    host, problems = probe({"tracking.run_dir": (str(good), ".m1", True),
                            "checkpoint.dir": (str(tmp_path / "nowhere"), ".m3", True),
                            "algo.weak_to_strong.weak_model": (str(foreign), ".m2", True),
                            "model.path": (str(model), "", False)})
    assert host and problems == {
        "checkpoint.dir": "no such directory on this node",
        "algo.weak_to_strong.weak_model": "a different directory of the same name (not the one the driver wrote)",
        "model.path": "no config.json here: not the model directory the driver sees"}
    assert sorted(p.name for p in good.iterdir()) == [".m1"]  # the write probe cleans up after itself
