"""Synthetic multi-step integer arithmetic with gold step-by-step solutions.

`a+b*c-d` is solved in operator-precedence order, one binary operation per line (`7*3=21`, `5+21=26`, `26-4=22`),
so every step is an exact arithmetic claim the step checker and the oracle teacher can verify. The test split is
drawn first and the train split never repeats a test expression, so the splits are disjoint by construction. A
`dev` split, drawn last and disjoint from both, is for tuning (β, learning rate, difficulty) without looking at test;
drawing it leaves test and train unchanged.
"""

from __future__ import annotations

import random

from rayscale.config import SyntheticTaskConfig
from rayscale.data.problem import Problem
from rayscale.errors import ConfigError
from rayscale.prompts import format_solution

_APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def solve_steps(numbers: list[int], ops: list[str]) -> tuple[list[str], int]:
    """Reduce `numbers[0] ops[0] numbers[1] ...` by precedence (all `*` first, then left to right)."""
    nums, ops, steps = list(numbers), list(ops), []
    while ops:
        i = ops.index("*") if "*" in ops else 0
        a, b = nums[i], nums[i + 1]
        r = _APPLY[ops[i]](a, b)
        steps.append(f"{a}{ops[i]}{b}={r}")
        nums[i : i + 2] = [r]
        del ops[i]
    return steps, nums[0]


def _expression(rng: random.Random, cfg: SyntheticTaskConfig) -> tuple[list[int], list[str]]:
    numbers = [rng.randint(1, cfg.operand_max) for _ in range(cfg.num_operands)]
    ops = [rng.choice(cfg.operators) for _ in range(cfg.num_operands - 1)]
    return numbers, ops


def _problem(numbers: list[int], ops: list[str], split: str, index: int) -> Problem:
    expr = "".join(f"{n}{o}" for n, o in zip(numbers, ops)) + str(numbers[-1])
    steps, answer = solve_steps(numbers, ops)
    return Problem(
        id=f"synthetic/{split}/{index}",
        question=f"{expr}=?",
        gold_answer=str(answer),
        gold_solution=format_solution(steps, str(answer)),
        gold_steps=tuple(steps),
        source="synthetic",
        meta={"expression": expr},
    )


def _draw(rng: random.Random, cfg: SyntheticTaskConfig, n: int, exclude: set[str], split: str) -> list[Problem]:
    out: list[Problem] = []
    seen = set(exclude)
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ConfigError(
                f"data.synthetic: cannot draw {n} distinct {split} problems with num_operands={cfg.num_operands}, "
                f"operand_max={cfg.operand_max}, operators={cfg.operators!r}; raise data.synthetic.operand_max or "
                "num_operands, or lower the split sizes"
            )
        numbers, ops = _expression(rng, cfg)
        key = "".join(f"{n}{o}" for n, o in zip(numbers, ops)) + str(numbers[-1])
        if key in seen:
            continue
        seen.add(key)
        out.append(_problem(numbers, ops, split, len(out)))
    return out


def synthetic_splits(cfg: SyntheticTaskConfig, dev: bool = False) -> dict[str, list[Problem]]:
    """{"train", "test"}, plus "dev" when asked for: only a run that evaluates on it pays for (and needs room for)
    the extra distinct expressions."""
    test = _draw(random.Random(f"rayscale-synthetic-test-{cfg.seed}"), cfg, cfg.test_size, set(), "test")
    exclude = {p.meta["expression"] for p in test}
    train = _draw(random.Random(f"rayscale-synthetic-train-{cfg.seed}"), cfg, cfg.train_size, exclude, "train")
    splits = {"train": train, "test": test}
    if dev:
        exclude |= {p.meta["expression"] for p in train}
        splits["dev"] = _draw(random.Random(f"rayscale-synthetic-dev-{cfg.seed}"), cfg, cfg.dev_size, exclude, "dev")
    return splits
