"""Two Ray nodes on this machine: rollout workers pinned to the second node, learners on the head; the loop syncs
weights across the node boundary every iteration."""

from __future__ import annotations

import json

import pytest

from rayscale.config_loading import load_config
from rayscale.controller import Trainer
from rayscale.run_setup import prepare_run
from tests.test_loop import TINY

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # a connection left by an earlier test would shadow this cluster
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "resources": {"node0": 1}})
    cluster.connect()  # attach to the head first: a driver bound to a worker node dies with it at teardown
    cluster.add_node(num_cpus=2, resources={"node1": 1})
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_rollout_on_second_node_receives_every_sync(two_nodes, tmp_path):
    import ray
    from ray.util.state import list_actors

    # Which node is which, read while both are up: a node that has gone away by the end reports no resources.
    node_of = {n["NodeID"]: ("node1" if "node1" in n["Resources"] else "node0") for n in ray.nodes() if n["Alive"]}
    cfg = load_config(None, [*TINY, f"tracking.run_dir={tmp_path}", f"cluster.address={two_nodes.address}",
                             "cluster.rollout.node_resource=node1", "cluster.learner.node_resource=node0",
                             "rollout.num_workers=2", "algo.strategy=correction"])
    assert Trainer(cfg, prepare_run(cfg)).run() == 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    learned = sum(1 for r in rows[1:] if r["pairs"] >= 2)
    assert learned >= 1 and rows[-1]["policy_version"] == learned

    assert sorted(node_of.values()) == ["node0", "node1"]
    placed = {}
    for actor in list_actors(detail=True, limit=1000):
        if actor["node_id"]:  # an actor that never got a node (killed while pending) was placed nowhere
            placed.setdefault(actor["class_name"], set()).add(node_of.get(actor["node_id"]))
    assert placed["RolloutWorker"] == {"node1"}
    assert placed["LearnerRank"] == {"node0"}
