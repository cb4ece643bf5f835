"""Ray placement groups for the roles of a plan (see rayscale.plan): check, reserve, hand out bundles.

    placements = place_roles(cfg)                       # after ray.init; PlacementError if the cluster is too small
    Worker.options(**placements["rollout"].actor_options(i)).remote(...)   # actor i of a role on bundle i

The fit is checked against the live nodes BEFORE any placement group exists, so a config bigger than the cluster
fails in well under a second with the role and the shortfall named; placement groups that still do not come up
(another job holds the resources, an autoscaler is slow) fail after `timeout_s` with the pending roles named,
and are removed, instead of leaving the run waiting forever.
"""

from __future__ import annotations

import os
import uuid
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

from rayscale.config import RayscaleConfig, RoleResources
from rayscale.plan import (
    Node,
    PlacementError,
    Plan,
    RolePlan,
    nodes_from_ray,
    plan_placement,
    require_fit,
)

__all__ = ["RolePlacement", "place_roles", "place_one_role", "create_placement_groups", "remove_placement_groups",
           "cluster_nodes", "PlacementError"]


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
        b = self.plan.actor_request  # the whole bundle, or its share of one it shares (cluster.colocate)
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


def actor_location() -> dict[str, Any]:
    """Where the calling actor runs: node, placement group (None outside one), process; every role's actor
    answers it as `location()` (tests check that each actor is in its role's group)."""
    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "placement_group": ctx.get_placement_group_id(), "pid": os.getpid()}


def place_roles(cfg: RayscaleConfig, roles: tuple[str, ...] | None = None) -> dict[str, RolePlacement]:
    """The controller's one call: the plan of `cfg` (the one `rayscale status` and `--dry-run` print), checked to
    fit (unless autoscaling), every role reserved. `roles`: only these (a command that starts fewer roles)."""
    plan = plan_placement(cfg)
    if roles is not None:
        plan = plan.only(*roles)
    return create_placement_groups(plan, cfg.cluster.placement_timeout_s, check_fit=not cfg.cluster.autoscaling)


def place_one_role(role: str, count: int, resources: RoleResources, timeout_s: float = 120.0) -> RolePlacement:
    """A role's placement outside a training plan (a manager started on its own: tests, benchmarks, tools),
    reserved by the same code as the controller's. Whoever calls this owns the group and removes it."""
    bundle = resources.bundle()
    if not bundle:
        raise PlacementError(f"{role}: an actor that reserves nothing cannot be placed; give it num_cpus > 0")
    plan = Plan((RolePlan(role, "actor", count, bundle, resources.strategy),))
    return create_placement_groups(plan, timeout_s, check_fit=False,
                                   name_prefix=f"rayscale-{uuid.uuid4().hex[:8]}")[role]


def create_placement_groups(plan: Plan, timeout_s: float = 120.0, check_fit: bool = True,
                            name_prefix: str = "rayscale") -> dict[str, RolePlacement]:
    """One placement group per role, in plan order; raises PlacementError instead of waiting forever."""
    if check_fit:
        require_fit(plan, cluster_nodes())
    placements: dict[str, RolePlacement] = {}
    try:
        for rp in plan.roles:
            if rp.shares:  # colocated: the host role's group (created first: ROLES order), actor i in bundle i
                placements[rp.role] = RolePlacement(rp, placements[rp.shares].group)
                continue
            group = placement_group(rp.bundles, strategy=rp.strategy, name=f"{name_prefix}-{rp.role}")
            placements[rp.role] = RolePlacement(rp, group)
    except BaseException:
        remove_placement_groups(placements)
        raise
    refs = {p.group.ready(): role for role, p in placements.items() if not p.plan.shares}
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
        if not p.plan.shares:  # a colocated role's group is its host's, removed once
            remove_placement_group(p.group)


def cluster_nodes() -> list[Node]:
    """The alive nodes with what placement can still reserve on each."""
    try:  # per-node availability is a developer API; without it, plan against the totals
        from ray._private.state import available_resources_per_node  # developer API, may move

        available = available_resources_per_node()
    except Exception:  # only loses precision: the placement-group wait still catches what this misses
        available = None
    return nodes_from_ray(ray.nodes(), available)
