"""After a sync: does the engine compute with the weights the learner has? Checked on outputs, not on tensors.

Checksums of an engine's parameters can all match while it computes with something else: vLLM on a CPU keeps a
pre-packed copy of each GEMM's weight, and a stale packed copy leaves every parameter right and every logit wrong.
So the check runs the model: each rollout engine continues a few probe prompts greedily, the learner scores the
same tokens (teacher-forced, one forward), and every engine token must be the learner's argmax at its position,
unless the learner's own top two logits there are closer than the engine's numerical noise (`tolerance`).

Pure logic: the learner side is `score_greedy` on any HF causal LM; the weight-sync coordinator
(rayscale.sync.coordinator.WeightSync.check_outputs) drives both sides.
"""

from __future__ import annotations

from collections.abc import Sequence

from rayscale.types import RolloutRequest

# Plain printable ASCII, so every tokenizer (the tiny character-level one included) encodes them.
PROBE_PROMPTS = ("3+4*2=", "Question: Tom has 12 apples and eats 5. How many are left?\nAnswer:")
PROBE_TOKENS = 8
# Logit gaps below these are numerical noise between two implementations (kernels, reduction order).
TOLERANCE = {"float32": 1e-2, "bfloat16": 1.0, "float16": 0.5}


def probe_requests(max_new_tokens: int = PROBE_TOKENS) -> list[RolloutRequest]:
    return [RolloutRequest(f"sync-probe-{i}", p, n=1, temperature=0.0, seed=0, max_new_tokens=max_new_tokens,
                           logprobs=False) for i, p in enumerate(PROBE_PROMPTS)]


def tolerance(*dtypes: str) -> float:
    """The noise bound for two sides computing in these dtypes: the looser one's."""
    return max(TOLERANCE.get(d.removeprefix("torch."), 1.0) for d in dtypes)


def score_greedy(model, tokenizer, prompts: Sequence[str], continuations: Sequence[Sequence[int]]
                 ) -> list[list[tuple[int, float]]]:
    """For each prompt + continuation: at every continuation position, the model's argmax token and the gap
    between its top two logits. One forward per sequence; call under torch.no_grad on every rank that shares
    the model (ZeRO-3 gathers inside the forward)."""
    import torch  # local: only learner processes score; the coordinator uses the torch-free checks below

    out = []
    device = next(model.parameters()).device
    for prompt, cont in zip(prompts, continuations):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] + list(cont)
        if not cont:
            out.append([])
            continue
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0].float()
        start = len(ids) - len(cont) - 1  # the logits at position p predict token p + 1
        top = logits[start : len(ids) - 1].topk(2, dim=-1)
        out.append([(int(i), float(v[0] - v[1])) for i, v in zip(top.indices[:, 0], top.values)])
    return out


def disagreements(engine_tokens: Sequence[Sequence[int]], learner: Sequence[Sequence[tuple[int, float]]],
                  tol: float) -> list[str]:
    """Where an engine's greedy token is not the learner's argmax by more than `tol`; empty when they agree.
    The learner was teacher-forced on the engine's tokens, so every position compares like with like."""
    problems = []
    for p, (tokens, scored) in enumerate(zip(engine_tokens, learner)):
        for k, (tok, (best, gap)) in enumerate(zip(tokens, scored)):
            if tok != best:
                if gap > tol:
                    problems.append(f"probe {p} token {k}: the engine chose {tok}, the learner's argmax is {best} "
                                    f"(ahead by {gap:.3g} logits > tolerance {tol:g})")
    return problems
