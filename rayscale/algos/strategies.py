"""The pair-strategy registry: `algo.strategy` names -> builders, each with one signature.

    @strategy("my_strategy")
    def build(ctx: StrategyContext, group, rng, iteration, stats) -> list[PreferencePair]: ...

- `group`: the prompts this strategy got this iteration, each with its graded samples, `[(Problem, [Graded])]`.
- `rng`: the iteration's shared `random.Random` (the draws of one builder shift the next one's: the controller
  calls them in a fixed order).
- `iteration`: the iteration number (for seeds: `ctx.seed(ctx.algo.seed, iteration, ...)`).
- `stats`: the iteration's metrics row; a builder adds its own counters (`pairs/<name>` is added by the caller).

A builder reaches the outside world only through `ctx` (plain callables: rollouts, the verifier, the teacher, the
weak supervisor), so it is a pure function in tests. Registering a name is all it takes for the config to accept
it (`rayscale.config` checks `algo.strategy` against `strategy_names()`). No Ray, no torch here.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rayscale import metric_names as M
from rayscale.algos import pairs as P
from rayscale.teacher.records import failure_reason
from rayscale.types import PreferencePair, RolloutRequest, Sample, VerifyResult

if TYPE_CHECKING:
    from rayscale.config import AlgoConfig
    from rayscale.data import Problem
    from rayscale.teacher.records import Correction

Group = list[tuple["Problem", list[P.Graded]]]


@dataclass(frozen=True)
class StrategyContext:
    """What builders may use from outside: the algo config and the actors, as plain callables."""

    algo: AlgoConfig
    generate: Callable[[list[RolloutRequest]], list[list[Sample]]]  # one list of samples per request, in order
    verify: Callable[[list[tuple[str, str]]], list[VerifyResult]]  # one per (gold, response), in order
    correct: Callable[[list[tuple[Problem, P.Graded]]], list[Correction]]  # the teacher: one per item, in order
    weak_answers: Callable[[list[Problem]], dict[str, str]]  # the weak supervisor's answer per problem id
    seed: Callable[..., int]  # a stable seed from integers (the controller's `_seed`)
    # Streaming stages (rayscale.algos.streaming): the generator of each prompt's own draws, so that what a
    # builder picks for a prompt does not depend on when its samples came back. None: the shared `rng`.
    prompt_rng: Callable[[Problem], random.Random] | None = None

    def rng_for(self, problem: Problem, shared: random.Random) -> random.Random:
        return self.prompt_rng(problem) if self.prompt_rng is not None else shared


Builder = Callable[[StrategyContext, Group, random.Random, int, dict[str, Any]], list[PreferencePair]]

# Which of one prompt's graded samples the builder will send to the teacher (ctx.correct), given that prompt's
# own generator (ctx.prompt_rng): streaming stages send them early. Only builders that ask the teacher have one.
TeacherItems = Callable[[StrategyContext, "Problem", list[P.Graded], random.Random], list]

_REGISTRY: dict[str, Builder] = {}
_TEACHER_ITEMS: dict[str, TeacherItems] = {}


def strategy(name: str, *, replace: bool = False,
             teacher_items: TeacherItems | None = None) -> Callable[[Builder], Builder]:
    """Register the decorated builder under `name` (a second builder for a taken name needs `replace=True`);
    `teacher_items`: what of a prompt the builder will have corrected, for streaming stages to send early."""

    def register(fn: Builder) -> Builder:
        if not replace and _REGISTRY.get(name, fn) is not fn:
            raise ValueError(f"strategy {name!r} is already registered ({_REGISTRY[name].__qualname__})")
        _REGISTRY[name] = fn
        _TEACHER_ITEMS.pop(name, None)
        if teacher_items is not None:
            _TEACHER_ITEMS[name] = teacher_items
        return fn

    return register


def strategy_names() -> tuple[str, ...]:
    """The registered names, in registration order (the built-ins first)."""
    return tuple(_REGISTRY)


def get_strategy(name: str) -> Builder:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown strategy {name!r}; expected one of {', '.join(_REGISTRY)}") from None


def teacher_items(name: str, ctx: StrategyContext, problem: Problem, graded: list[P.Graded]) -> list:
    """The teacher calls strategy `name`'s builder will make for this prompt. Only with `ctx.prompt_rng` (streaming
    stages): without it the builder draws from the iteration's shared generator, which no one can replay early."""
    if ctx.prompt_rng is None:
        raise ValueError("teacher_items needs ctx.prompt_rng: the builder's draws for a prompt must be its own")
    pick = _TEACHER_ITEMS.get(name)
    return pick(ctx, problem, graded, ctx.prompt_rng(problem)) if pick else []


def build_pairs(name: str, ctx: StrategyContext, group: Group, rng: random.Random, iteration: int,
                stats: dict[str, Any]) -> list[PreferencePair]:
    return get_strategy(name)(ctx, group, rng, iteration, stats)


# ------------------------------------------------------------------------------------------------ built-ins
@strategy("outcome")
def outcome(ctx: StrategyContext, group: Group, rng: random.Random, iteration: int,
            stats: dict[str, Any]) -> list[PreferencePair]:
    return [pair for _, gs in group for pair in P.outcome_pairs(gs, rng)]


def to_correct(ctx: StrategyContext, problem: Problem, graded: list[P.Graded], rng: random.Random) -> list:
    """`correction`'s teacher items for one prompt: up to `max_per_prompt` of its distinct wrong samples."""
    return [(problem, g) for g in P.wrong_samples_to_correct(graded, ctx.algo.correction.max_per_prompt, rng)]


@strategy("correction", teacher_items=to_correct)
def correction(ctx: StrategyContext, group: Group, rng: random.Random, iteration: int,
               stats: dict[str, Any]) -> list[PreferencePair]:
    cfg = ctx.algo.correction
    wrong = [item for p, gs in group for item in to_correct(ctx, p, gs, ctx.rng_for(p, rng))]
    stats[M.CORRECTION_REQUESTS] = stats.get(M.CORRECTION_REQUESTS, 0) + len(wrong)  # teacher calls asked
    pairs = []
    for (_, g), c in zip(wrong, ctx.correct(wrong)):
        if not c.accepted:
            key = f"teacher_rejected/{c.reject_reason}"
            stats[key] = stats.get(key, 0) + 1
            failed = failure_reason(c.reject_reason, c.meta)
            if failed:  # no answer at all: counted by the backend's reason (the controller's stop rule reads it)
                key = M.TEACHER_FAILED_PREFIX + failed
                stats[key] = stats.get(key, 0) + 1
            continue
        pair = P.correction_pair(g.sample, c.wrong_step, "\n".join(c.corrected_steps), cfg.span)
        if pair is not None:
            pair.note = f"step {c.wrong_step + 1} wrong: {c.explanation}"
            pairs.append(pair)
    return pairs


@strategy("step_controlled")
def step_controlled(ctx: StrategyContext, group: Group, rng: random.Random, iteration: int,
                    stats: dict[str, Any]) -> list[PreferencePair]:
    cfg = ctx.algo.step_controlled
    pending = [g for _, gs in group for g in P.distinct_samples([g for g in gs if g.correct])]
    gold = {p.id: p.gold_answer for p, _ in group}
    pairs = []
    for attempt in range(cfg.max_tries):
        if not pending:
            break
        reqs = P.step_controlled_requests(pending, cfg, rng, attempt, ctx.seed(ctx.algo.seed, iteration, 3, attempt))
        outs = ctx.generate([r for _, _, r in reqs])
        verdicts = ctx.verify([(gold[g.sample.prompt_id], o[0].response) for (g, _, _), o in zip(reqs, outs)])
        pending = []
        for (g, k, _), o, v in zip(reqs, outs, verdicts):
            if v.correct:
                pending.append(g)  # still right: try again hotter
            else:
                pairs.append(P.step_controlled_pair(g.sample, k, o[0]))
    stats["step_controlled/unbroken"] = len(pending)
    return pairs


@strategy("weak_to_strong")
def weak_to_strong(ctx: StrategyContext, group: Group, rng: random.Random, iteration: int,
                   stats: dict[str, Any]) -> list[PreferencePair]:
    weak = ctx.weak_answers([p for p, _ in group])
    pairs = []
    for p, gs in group:
        label, decision = P.weak_to_strong_label(gs, weak.get(p.id), ctx.algo.weak_to_strong)
        stats[f"w2s/{decision}"] = stats.get(f"w2s/{decision}", 0) + 1
        if label is not None:
            pairs.extend(P.weak_to_strong_pairs(gs, label, rng))
    return pairs
