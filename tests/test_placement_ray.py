"""Placement groups on a real 3-node Ray cluster (ray.cluster_utils.Cluster on this machine, GPUs declared)."""

import os
import subprocess
import sys
import time

import pytest

from rayscale.config_loading import load_config
from rayscale.plan import PlacementError, plan_placement, simulate

pytestmark = pytest.mark.ray

# node0: the head, CPUs only; node1: the "gen" node (rollout); node2: the "train" node (learners).
NODES = [
    {"num_cpus": 2, "resources": {"node0": 1}},
    {"num_cpus": 2, "num_gpus": 2, "resources": {"node1": 1, "gen_node": 1}},
    {"num_cpus": 2, "num_gpus": 2, "resources": {"node2": 1, "train_node": 1}},
]
FITS = [
    "learner.num_ranks=2", "cluster.learner={num_cpus: 0.5, num_gpus: 1, node_resource: train_node}",
    "rollout.num_workers=2", "cluster.rollout={num_cpus: 0.5, num_gpus: 1, node_resource: gen_node}",
    "cluster.teacher={num_cpus: 0.5}", "verifier.num_workers=2", "cluster.verifier={num_cpus: 0.5}",
]
TOO_BIG = [*FITS, "rollout.num_workers=3"]  # 3 GPUs asked of the one 2-GPU gen node


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    small = {"object_store_memory": 80 * 1024**2}
    c = Cluster(initialize_head=True, head_node_args={**NODES[0], **small})
    ids = {"node0": c.head_node.node_id}
    for i, args in enumerate(NODES[1:], start=1):
        ids[f"node{i}"] = c.add_node(**args, **small).node_id
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
    try:
        yield c, ids
    finally:
        ray.shutdown()
        c.shutdown()


def our_groups():
    from ray.util.placement_group import placement_group_table

    return {g["name"]: g["state"] for g in placement_group_table().values()
            if g["name"].startswith("rayscale-") and g["state"] != "REMOVED"}


def wait_released(timeout_s=20.0):
    """Removing placement groups and killing actors is asynchronous: wait until the cluster is idle again."""
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        free = ray.available_resources()
        if not our_groups() and free.get("GPU") == 4 and free.get("CPU") == 6:
            return
        time.sleep(0.2)
    raise AssertionError(f"cluster not released: groups {our_groups()}, free {ray.available_resources()}")


def test_fitting_plan_gets_one_group_per_role_on_the_right_nodes(cluster):
    import ray

    from rayscale.actors.placement import cluster_nodes, create_placement_groups, remove_placement_groups

    _, ids = cluster
    plan = plan_placement(load_config(None, FITS))
    predicted = simulate(plan, cluster_nodes())
    placements = create_placement_groups(plan, timeout_s=60)
    try:
        assert set(placements) == {"learner", "rollout", "teacher", "verifier"}
        landed = {role: p.bundle_nodes() for role, p in placements.items()}
        print({role: [next(k for k, v in ids.items() if v == n) for n in nodes] for role, nodes in landed.items()})
        assert landed["learner"] == [ids["node2"]] * 2 and landed["rollout"] == [ids["node1"]] * 2
        assert landed == predicted.bundles  # what `rayscale status` shows is where Ray put them

        @ray.remote
        class Probe:
            def where(self):
                return ray.get_runtime_context().get_node_id(), len(ray.get_gpu_ids())

        probe = Probe.options(**placements["rollout"].actor_options(1)).remote()
        assert ray.get(probe.where.remote(), timeout=60) == (ids["node1"], 1)  # on its bundle, with its GPU
        ray.kill(probe)
    finally:
        remove_placement_groups(placements)
        wait_released()


def test_too_big_plan_fails_fast_naming_role_and_shortfall(cluster):
    from rayscale.actors.placement import create_placement_groups

    with pytest.raises(PlacementError) as e:
        create_placement_groups(plan_placement(load_config(None, TOO_BIG)), timeout_s=60)
    msg = str(e.value)  # the up-front fit check's error, not the 60 s wait's ("not placed within")
    assert "not placed within" not in msg
    assert "rollout needs 3 GPU (3 workers x 1 GPU) but the nodes with gen_node have 2 GPU free" in msg
    assert "short by 1 GPU" in msg and [s.role for s in e.value.shortfalls] == ["rollout"]
    assert our_groups() == {}  # nothing was reserved


def test_unplaceable_groups_time_out_and_are_removed(cluster):
    from rayscale.actors.placement import create_placement_groups

    with pytest.raises(PlacementError, match=r"placement group\(s\) for rollout not placed within 2 s"):
        create_placement_groups(plan_placement(load_config(None, TOO_BIG)), timeout_s=2, check_fit=False)
    wait_released()


def status(address, *overrides):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "RAY_ADDRESS": ""}
    return subprocess.run([sys.executable, "-m", "rayscale.cli", "status", *overrides, "--address", address],
                          capture_output=True, text=True, env=env, timeout=120)


def test_status_prints_nodes_plan_and_assignment(cluster):
    c, ids = cluster
    r = status(c.address, *FITS)
    assert r.returncode == 0, r.stderr
    print(r.stdout)
    assert "3 alive node(s)" in r.stdout and "fits: every actor has a place" in r.stdout
    assert f"ranks 0-1        -> node {ids['node2'][:8]}" in r.stdout
    assert f"workers 0-1      -> node {ids['node1'][:8]}" in r.stdout
    r = status(c.address, *TOO_BIG)
    assert r.returncode == 2 and "NOT PLACED" in r.stdout
    assert "rollout needs 3 GPU" in r.stderr and "short by 1 GPU" in r.stderr and "Traceback" not in r.stderr

