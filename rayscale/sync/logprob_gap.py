"""Every iteration: does the engine sample from the learner's weights? The log-probability gap on sampled tokens.

The rollout engines report the log-probability of every token they sampled (vLLM `logprobs=0`, HF generate from
its scores: the raw model's, before temperature or top-p). Before its step, the learner, holding the weights that
produced those samples, scores the same tokens teacher-forced. The mean absolute per-token difference is
`logprob_gap` (the worst sequence's mean: `logprob_gap_max`), in each metrics row. Kernel and dtype noise keep it
small but not zero (a bf16 engine against an fp32 learner: docs/rollout_and_sync.md); an engine left on other
weights (a sync that silently loaded nothing, as vLLM #57022 did on CPU; a stale packed LM head, vLLM #51665)
moves it by orders of magnitude. `sync.max_logprob_gap` turns a larger gap into a warning or a stop
(rayscale.sync.coordinator.WeightSync.check_logprob_gap). NeMo-RL logs the same figure at every refit; TRL's
`sampling_logp_difference` found a sync that left vLLM on the base model (TRL #5312).

Only engine-sampled tokens count: a pair's teacher-written text has no engine log-probability, and a sample's
`prefix` (a teacher's or a gold solution's opening) is context, not sampled. Pure logic, torch only inside the
learner-side function.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rayscale import metric_names as M
from rayscale.types import PreferencePair, Sample

GAP_KEYS = (M.LOGPROB_GAP, M.LOGPROB_GAP_MAX)


def trained_samples(pairs: Iterable[PreferencePair], samples: Iterable[Sequence[Sample]], version: int
                    ) -> list[Sample]:
    """The engine samples of policy `version`, with log-probabilities, whose response one of `pairs` trains on
    (as its chosen or its rejected side); each once."""
    responses = set()
    for p in pairs:
        responses.add((p.prompt_id, p.shared_prefix + p.chosen))
        responses.add((p.prompt_id, p.shared_prefix + p.rejected))
    out, seen = [], set()
    for group in samples:
        for s in group:
            key = (s.prompt_id, s.response)
            if (s.logprobs and s.token_ids and s.policy_version == version and key in responses
                    and (key, tuple(s.token_ids)) not in seen):
                seen.add((key, tuple(s.token_ids)))
                out.append(s)
    return out


def score_tokens(model, tokenizer, contexts: Sequence[tuple[str, str]], continuations: Sequence[Sequence[int]]
                 ) -> list[list[float]]:
    """The model's log-probability of each continuation token after its (prompt, prefix), tokenized as the rollout
    engines do (each piece alone, no special tokens). One forward per sequence; call under torch.no_grad on every
    rank that shares the model (ZeRO-3 gathers inside the forward)."""
    import torch  # torch: only learner processes score; the controller uses the torch-free functions here

    out = []
    device = next(model.parameters()).device
    for (prompt, prefix), cont in zip(contexts, continuations):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if prefix:
            ids = ids + tokenizer(prefix, add_special_tokens=False)["input_ids"]
        start = len(ids) - 1  # the logits at position p predict token p + 1
        ids = ids + list(cont)
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, start : len(ids) - 1].float()
        picked = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(list(cont), device=device)[:, None])
        out.append(picked[:, 0].tolist())
    return out


def gap(engine: Sequence[Sequence[float]], learner: Sequence[Sequence[float]]) -> dict[str, float | None]:
    """{logprob_gap: mean |engine - learner| over every token, logprob_gap_max: the largest per-sequence mean};
    None for both when there is nothing to compare."""
    total, count, worst = 0.0, 0, None
    for e, lrn in zip(engine, learner):
        diffs = [abs(a - b) for a, b in zip(e, lrn)]
        if diffs:
            total, count = total + sum(diffs), count + len(diffs)
            worst = max(worst or 0.0, sum(diffs) / len(diffs))
    return {"logprob_gap": total / count if count else None, "logprob_gap_max": worst}
