"""Connecting to Ray: the one module that calls `ray.init`.

    start_or_join(cfg)      a training run or `rayscale eval`: join `cluster.address` or start a local Ray sized
                            for the plan, then (training) check that every node that may host one of its actors
                            sees the run directory, before any actor starts (whether the plan fits is checked
                            by the one that reserves it: rayscale.actors.placement.place_roles)
    join(address, wait_s)   `rayscale status`: a running cluster only, failing at once when nothing answers
    ensure_local()          a component used on its own (a test, a benchmark): a local Ray unless one is up

Everything else (placement groups, actors) assumes Ray is connected and never starts it.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
import uuid
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rayscale.actors.placement import cluster_nodes
from rayscale.config import RayscaleConfig
from rayscale.errors import ConfigError
from rayscale.plan import ClusterUnavailable, Node, Plan, plan_placement
from rayscale.run_setup import model_sources
from rayscale.sanity import check_local_cpus


def start_or_join(cfg: RayscaleConfig, check_storage: bool = True, log_to_driver: bool = True,
                  runtime_env: dict | None = None) -> None:
    """Join the cluster (`cluster.address`, `auto` under `ray job submit`) or start a local one, then (for a
    training run, `check_storage`) check that the nodes see the run directory (`require_shared_storage`). Whether
    the roles fit is checked once, by `place_roles`, against exactly the roles it reserves. `log_to_driver=False`
    keeps the actors' output out of this process (`rayscale bench`).
    `runtime_env`: the job's (a training run's: `rayscale.logs.runtime_env`, actors' output into the run
    directory); with one, Ray's own INFO lines are left out of the console too."""
    plan = plan_placement(cfg)
    if not ray.is_initialized():
        quiet = {"runtime_env": runtime_env, "logging_level": logging.WARNING} if runtime_env else {}
        if cfg.cluster.address:
            ray.init(address=cfg.cluster.address, log_to_driver=log_to_driver, **quiet)
        else:
            # Ray's CPUs are scheduling tokens, not cores: a local run declares enough for its own plan, within
            # reason (rayscale.sanity.check_local_cpus refuses a plan that would crawl, warns on one that shares).
            warning = check_local_cpus(plan.total().get("CPU", 0), os.cpu_count() or 1, cfg.cluster.num_cpus)
            if warning:
                print(f"warning: {warning}", file=sys.stderr, flush=True)
            ray.init(address="local", num_cpus=local_num_cpus(cfg), include_dashboard=False,
                     log_to_driver=log_to_driver, **quiet)
    if check_storage and cfg.cluster.address:
        require_shared_storage(cfg, plan)


def local_num_cpus(cfg: RayscaleConfig) -> int:
    """The CPUs a local Ray declares for `cfg`: `cluster.num_cpus`, else enough for the plan (at least the cores)."""
    return cfg.cluster.num_cpus or max(os.cpu_count() or 1, math.ceil(plan_placement(cfg).total().get("CPU", 0)))


def ensure_local() -> bool:
    """Start a local Ray unless one is connected; True when this call started it (the caller then shuts it down)."""
    if ray.is_initialized():
        return False
    ray.init(include_dashboard=False, log_to_driver=False)
    return True


def join(address: str = "auto", wait_s: float = 0.0, probe_timeout_s: float = 3.0) -> None:
    """ray.init against a running cluster. ClusterUnavailable at once if nothing answers (ray.init itself would
    retry for minutes against a dead address), or after `wait_s` when waiting for a head that is starting."""
    if not address.startswith("ray://"):
        deadline = time.monotonic() + wait_s
        while True:
            try:
                address = _probe(address, probe_timeout_s)
                break
            except ClusterUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1.0)
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError) as e:
        ray.shutdown()
        cause = f"{e}: {e.__cause__}" if e.__cause__ else str(e)
        if "auth" in cause.lower():
            raise ClusterUnavailable(
                f"the Ray cluster at {address} requires token authentication: export RAY_AUTH_MODE=token with its "
                "token in RAY_AUTH_TOKEN or ~/.ray/auth_token (docs/launch.md, Security)"
            ) from None
        raise ClusterUnavailable(f"could not join the Ray cluster at {address}: {cause.splitlines()[-1]}") from None


def _probe(address: str, timeout_s: float) -> str:
    """host:port of the GCS ('auto' = RAY_ADDRESS or the cluster last started here), checked to accept TCP."""
    target = address
    try:
        from ray._private.services import canonicalize_bootstrap_address_or_die  # private API: may be absent

        target = canonicalize_bootstrap_address_or_die(address)
    except ImportError:  # a Ray without the helper: take the address as given
        pass
    except (ConnectionError, ValueError) as e:
        raise ClusterUnavailable(f"no running Ray cluster found for address {address!r}: {e}") from None
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return target
    except (OSError, ValueError):
        raise ClusterUnavailable(
            f"no Ray cluster answers at {target} (address {address!r}); start one with `ray start --head` "
            "(see docs/launch.md) or pass the head's host:port with --address"
        ) from None


def wait_for_nodes(count: int, timeout_s: float, poll_s: float = 2.0) -> int:
    """Block until `count` nodes are alive (after connect); ClusterUnavailable naming how many joined."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = sum(1 for n in ray.nodes() if n.get("Alive"))
        if alive >= count:
            return alive
        if time.monotonic() >= deadline:
            raise ClusterUnavailable(f"only {alive} of {count} Ray nodes joined within {timeout_s:g} s; check the "
                                     "worker nodes' logs (/tmp/ray/session_latest/logs/raylet.err)")
        time.sleep(poll_s)


# --------------------------------------------------------------------------------------------------- shared storage
class SharedStorageError(ConfigError):
    """A node that may host one of the run's actors does not see a path the run reads or writes there."""


def shared_paths(cfg: RayscaleConfig) -> dict[str, tuple[str, bool]]:
    """The paths actors on other nodes use, by config key: (path, whether they write there). Rollout workers and
    learner ranks load the starting policy from <run_dir> (stage 1's export, the tiny model), learner ranks write
    checkpoints and the final model there, and every actor loads a local `model.path`."""
    paths = {"tracking.run_dir": (cfg.tracking.run_dir, True)}
    if cfg.checkpoint.dir:
        paths["checkpoint.dir"] = (cfg.checkpoint.dir, True)
    for key, path in model_sources(cfg).items():
        if Path(path).expanduser().is_dir():  # a hub id is loaded from the hub on each node: nothing to share
            paths[key] = (path, False)
    return paths


def nodes_for_plan(plan: Plan, nodes: list[Node]) -> list[Node]:
    """The nodes that can hold a bundle of some role of `plan` (have every resource one bundle asks for)."""
    return [n for n in nodes if any(all(n.total.get(k, 0) >= v for k, v in rp.bundle.items() if v > 0)
                                    for rp in plan.roles if not rp.shares)]


@ray.remote(num_cpus=0)
def _probe_paths(checks: dict[str, tuple[str, str, bool]]) -> tuple[str, dict[str, str]]:
    """On one node: (hostname, {key: what is wrong}) for each (path, marker name, write) the driver made."""
    problems = {}
    for key, (path, marker, write) in checks.items():
        root = Path(path).expanduser()
        try:
            if not root.is_dir():
                problems[key] = "no such directory on this node"
            elif not marker and not (root / "config.json").is_file():
                problems[key] = "no config.json here: not the model directory the driver sees"
            elif marker and (root / marker).read_text() != marker:
                problems[key] = "a different directory of the same name (not the one the driver wrote)"
            elif write:
                probe = root / f"{marker}.{socket.gethostname()}.{os.getpid()}"
                probe.write_text("w")
                probe.unlink()
        except FileNotFoundError:
            problems[key] = "a different directory of the same name (not the one the driver wrote)"
        except OSError as e:
            problems[key] = f"{type(e).__name__}: {e}"
    return socket.gethostname(), problems


def require_shared_storage(cfg: RayscaleConfig, plan: Plan, timeout_s: float = 120.0) -> None:
    """Every node that may host an actor of the run (other than the driver's own) must see the run directory (and
    checkpoint.dir, local model directories) as the driver does: the same directory, writable. Checked once, at
    start, by a zero-CPU task on each such node; SharedStorageError names the node, the key and the fix."""
    here = ray.get_runtime_context().get_node_id()
    nodes = [n for n in nodes_for_plan(plan, cluster_nodes()) if n.node_id != here]
    if not nodes:
        return
    checks, markers = {}, []
    for key, (path, write) in shared_paths(cfg).items():
        marker = ""
        if write:  # the driver's own file proves it is the same directory, not one of the same name
            marker = f".rayscale-shared-check-{uuid.uuid4().hex}"
            Path(path).expanduser().mkdir(parents=True, exist_ok=True)
            (Path(path).expanduser() / marker).write_text(marker)
            markers.append(Path(path).expanduser() / marker)
        checks[key] = (str(Path(path).expanduser().absolute()), marker, write)
    try:
        refs = [_probe_paths.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False))
                .remote(checks) for n in nodes]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        lines = []
        for node, ref in zip(nodes, refs):
            if ref not in ready:
                lines.append(f"  - node {node.address}: did not answer within {timeout_s:g} s")
                continue
            host, problems = ray.get(ref)
            lines += [f"  - node {node.address} ({host}): {key}={checks[key][0]}: {why}"
                      for key, why in problems.items()]
    finally:
        for marker in markers:
            marker.unlink(missing_ok=True)
    if lines:
        raise SharedStorageError(
            "nodes that may host this run's actors do not see its directories as this driver does:\n"
            + "\n".join(lines) + "\nPut them on a file system every node mounts at the same path (NFS, Lustre, "
            "a shared home or scratch; /shared in launch/ray-cluster.yaml and KubeRay, $SLURM_SUBMIT_DIR under "
            "Slurm): e.g. tracking.run_dir=/shared/runs/NAME (docs/launch.md, What a lab must provide)")
