"""Connecting to Ray: the one module that calls `ray.init`.

    start_or_join(cfg)      a training run or `rayscale eval`: join `cluster.address` or start a local Ray sized
                            for the plan, then (training) check the plan fits before any actor starts
    join(address, wait_s)   `rayscale status`: a running cluster only, failing at once when nothing answers
    ensure_local()          a component used on its own (a test, a benchmark): a local Ray unless one is up

Everything else (placement groups, actors) assumes Ray is connected and never starts it.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time

import ray

from rayscale.actors.placement import cluster_nodes
from rayscale.config import RayscaleConfig
from rayscale.plan import ClusterUnavailable, plan_placement, require_fit
from rayscale.sanity import check_local_cpus


def start_or_join(cfg: RayscaleConfig, check_fit: bool = True, log_to_driver: bool = True) -> None:
    """Join the cluster (`cluster.address`, `auto` under `ray job submit`) or start a local one, then (for a
    training run) check that every role's actors fit before any is started: a shortfall fails at once, naming the
    role, never a hang. `log_to_driver=False` keeps the actors' output out of this process (`rayscale bench`)."""
    plan = plan_placement(cfg)
    if not ray.is_initialized():
        if cfg.cluster.address:
            ray.init(address=cfg.cluster.address, log_to_driver=log_to_driver)
        else:
            # Ray's CPUs are scheduling tokens, not cores: a local run declares enough for its own plan, within
            # reason (rayscale.sanity.check_local_cpus refuses a plan that would crawl, warns on one that shares).
            warning = check_local_cpus(plan.total().get("CPU", 0), os.cpu_count() or 1, cfg.cluster.num_cpus)
            if warning:
                print(f"warning: {warning}", file=sys.stderr, flush=True)
            ray.init(address="local", num_cpus=local_num_cpus(cfg), include_dashboard=False,
                     log_to_driver=log_to_driver)
    if check_fit and not cfg.cluster.autoscaling:
        require_fit(plan, cluster_nodes())


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
