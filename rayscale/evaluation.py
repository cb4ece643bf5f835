"""Held-out accuracy through rollout workers and the verifier pool (used by the loop and by `rayscale eval`)."""

from __future__ import annotations

import json
import random
import time
from typing import Any

from rayscale import cluster
from rayscale.actors.placement import place_roles, remove_placement_groups
from rayscale.actors.rollout import RolloutManager
from rayscale.actors.verifier import VerifierPool
from rayscale.data import Problem, load_problems
from rayscale.models import load_tokenizer
from rayscale.prompts import render_prompt
from rayscale.run_setup import check_model_source
from rayscale.types import RolloutRequest


def accuracy_on(rollout, verifier, problems: list[Problem], prompts: list[str], temperature: float,
                seed: int = 7, samples_per_problem: int = 1) -> tuple[float, list[dict[str, Any]]]:
    """`samples_per_problem` samples per problem at `temperature` (0 = greedy: one is enough); returns the accuracy
    over all samples (the mean of per-problem pass rates, a lower-variance estimate of sampled accuracy than one
    sample each) and one row per sample."""
    n = 1 if temperature == 0 else samples_per_problem
    rng = random.Random(seed)
    requests = [RolloutRequest(p.id, prompt, n=n, temperature=temperature, seed=rng.getrandbits(31))
                for p, prompt in zip(problems, prompts)]
    samples = [(p, s) for p, ss in zip(problems, rollout.generate(requests)) for s in ss]
    verdicts = verifier.verify([(p.gold_answer, s.response) for p, s in samples])
    rows = [
        {"id": p.id, "question": p.question, "gold": p.gold_answer, "response": s.response, "pred": v.pred,
         "correct": bool(v.correct), "status": v.status, "finish_reason": s.finish_reason}
        for (p, s), v in zip(samples, verdicts)
    ]
    return (sum(r["correct"] for r in rows) / len(rows) if rows else 0.0), rows


def load_eval_problems(data: str, limit: int | None, synthetic_cfg=None,
                       field_map: dict[str, str] | None = None) -> list[Problem]:
    """`gsm8k` / `math500` (the shared files offline, else the hub), `synthetic` (its test split), or a JSONL path."""
    if data in ("gsm8k", "math500", "math", "synthetic"):
        return load_problems(data, split="test", limit=limit, synthetic_cfg=synthetic_cfg)
    return load_problems("jsonl", data, field_map=field_map, limit=limit, key="--data")


def run_eval(cfg, model: str, data: str, limit: int | None, temperature: float, output: str | None) -> dict:
    """`rayscale eval`: accuracy of one model on one dataset through the same actors the trainer uses, placed
    by the same code (only the rollout and verifier roles of the plan)."""
    check_model_source(model, "--model")  # a missing model fails with the flag named, before any data or Ray
    problems = load_eval_problems(data, limit, cfg.data.synthetic, cfg.data.field_map)
    tokenizer = load_tokenizer(model, cfg.model.trust_remote_code)
    prompts = [render_prompt(tokenizer, p.question, cfg.data.prompt_style, cfg.data.use_chat_template)
               for p in problems]
    cluster.start_or_join(cfg, check_storage=False)  # eval starts only rollout workers and verifiers
    placements = place_roles(cfg, roles=("rollout", "verifier"))
    rollout = RolloutManager(model, cfg.rollout, placement=placements["rollout"],
                             trust_remote_code=cfg.model.trust_remote_code)
    verifier = VerifierPool.from_config(cfg.verifier, placements["verifier"])
    try:
        start = time.perf_counter()
        acc, rows = accuracy_on(rollout, verifier, problems, prompts, temperature)
        elapsed = time.perf_counter() - start
    finally:
        rollout.shutdown()
        verifier.shutdown()
        remove_placement_groups(placements)
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    summary = {"model": model, "data": data, "problems": len(rows), "temperature": temperature,
               "accuracy": acc, "status_counts": statuses, "seconds": round(elapsed, 2)}
    if output:
        with open(output, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return summary
