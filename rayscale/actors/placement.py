"""Ray placement groups for the roles of a plan (see rayscale.placement): check, reserve, hand out bundles.

    placements = place_roles(cfg)                       # after ray.init; PlacementError if the cluster is too small
    Worker.options(**placements["rollout"].actor_options(i)).remote(...)   # actor i of a role on bundle i

The fit is checked against the live nodes BEFORE any placement group exists, so a config bigger than the cluster
fails in well under a second with the role and the shortfall named; placement groups that still do not come up
(another job holds the resources, an autoscaler is slow) fail after `timeout_s` with the pending roles named,
and are removed, instead of leaving the run waiting forever.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rayscale.config import RayscaleConfig
from rayscale.placement import (
    ClusterUnavailable,
    Node,
    PlacementError,
    Plan,
    RolePlan,
    nodes_from_ray,
    plan_placement,
    require_fit,
)

__all__ = ["RolePlacement", "place_roles", "create_placement_groups", "remove_placement_groups", "cluster_nodes",
           "connect", "wait_for_nodes", "PlacementError", "ClusterUnavailable"]


@dataclass
class RolePlacement:
    """One role's placement group: bundle i is reserved for actor i of the role."""

    plan: RolePlan
    group: PlacementGroup

    def scheduling_strategy(self, index: int, capture_child_tasks: bool = False) -> PlacementGroupSchedulingStrategy:
        if not 0 <= index < self.plan.count:
            raise IndexError(f"{self.plan.role} has {self.plan.count} bundle(s); no bundle {index}")
        return PlacementGroupSchedulingStrategy(
            placement_group=self.group, placement_group_bundle_index=index,
            placement_group_capture_child_tasks=capture_child_tasks)

    def actor_options(self, index: int, capture_child_tasks: bool = False) -> dict[str, Any]:
        """`.options(**...)` for actor `index`: its bundle's resources and the strategy that pins it there.

        capture_child_tasks=True makes tasks/actors the actor starts (e.g. vLLM's Ray workers) land in the same
        placement group; leave it False when the actor itself takes the whole bundle.
        """
        b = self.plan.bundle
        return {
            "num_cpus": b.get("CPU", 0.0),
            "num_gpus": b.get("GPU", 0.0),
            "resources": {k: v for k, v in b.items() if k not in ("CPU", "GPU")} or None,
            "scheduling_strategy": self.scheduling_strategy(index, capture_child_tasks),
        }

    def bundle_nodes(self) -> list[str]:
        """The node id each bundle was placed on (after the group is ready)."""
        table = placement_group_table(self.group)
        return [table["bundles_to_node_id"][i] for i in range(self.plan.count)]


def place_roles(cfg: RayscaleConfig) -> dict[str, RolePlacement]:
    """The controller's one call: plan from the config, check it fits (unless autoscaling), reserve every role."""
    return create_placement_groups(plan_placement(cfg), cfg.cluster.placement_timeout_s,
                                   check_fit=not cfg.cluster.autoscaling)


def create_placement_groups(plan: Plan, timeout_s: float = 120.0, check_fit: bool = True,
                            name_prefix: str = "rayscale") -> dict[str, RolePlacement]:
    """One placement group per role, in plan order; raises PlacementError instead of waiting forever."""
    if check_fit:
        require_fit(plan, cluster_nodes())
    placements: dict[str, RolePlacement] = {}
    try:
        for rp in plan.roles:
            group = placement_group(rp.bundles, strategy=rp.strategy, name=f"{name_prefix}-{rp.role}")
            placements[rp.role] = RolePlacement(rp, group)
    except BaseException:
        remove_placement_groups(placements)
        raise
    refs = {p.group.ready(): role for role, p in placements.items()}
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    pending = [role for ref, role in refs.items() if ref not in ready]
    if pending:
        remove_placement_groups(placements)
        free = ", ".join(f"{k} {v:g}" for k, v in sorted(ray.available_resources().items())
                         if k in ("CPU", "GPU") or not any(s in k for s in ("node:", "memory", "_group_")))
        raise PlacementError(
            f"placement group(s) for {', '.join(pending)} not placed within {timeout_s:g} s (cluster.placement_timeout_s);"
            f" the cluster now has {free or 'nothing'} available. Other jobs may hold the resources, or an "
            "autoscaler is still adding nodes (then raise cluster.placement_timeout_s). Run `rayscale status CONFIG` "
            "to see the plan against the nodes."
        )
    return placements


def remove_placement_groups(placements: dict[str, RolePlacement]) -> None:
    for p in placements.values():
        remove_placement_group(p.group)


def cluster_nodes() -> list[Node]:
    """The alive nodes with what placement can still reserve on each."""
    try:  # per-node availability is a developer API; without it, plan against the totals
        from ray._private.state import available_resources_per_node

        available = available_resources_per_node()
    except Exception:  # only loses precision: the placement-group wait still catches what this misses
        available = None
    return nodes_from_ray(ray.nodes(), available)


# --------------------------------------------------------------------------------------------------- connecting
def connect(address: str = "auto", wait_s: float = 0.0, probe_timeout_s: float = 3.0) -> None:
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
        from ray._private.services import canonicalize_bootstrap_address_or_die

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
