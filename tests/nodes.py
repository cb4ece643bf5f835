"""Cluster nodes written by hand for placement tests and recipe checks (what `ray.nodes()` would report)."""

from __future__ import annotations

from rayscale.plan import Node


def node(node_id: str, address: str = "", is_head: bool = False, **resources: float) -> Node:
    """A node from keyword resources (`node("n1", CPU=8, GPU=8, gen_node=1)`), as a test writes one."""
    res = {k: float(v) for k, v in resources.items()}
    return Node(node_id, address or node_id, res, dict(res), is_head)
