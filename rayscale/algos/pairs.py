"""Pair strategies: pure functions from graded rollouts (and teacher corrections) to preference pairs.

- `outcome`: a verified-correct sample against a wrong one for the same prompt.
- `correction` (SuperCorrect cross-model DPO / LEMA): chosen = the student's steps before its first wrong step + the
  teacher's corrected continuation; rejected = the student's own continuation from that step; the shared prefix
  carries no loss.
- `step_controlled` (SCDPO): from a correct rollout, resample from step k at temperature min(t0 + delta*k, t_max)
  until the final answer goes wrong; chosen = the original continuation from k, rejected = the wrong one.
- `weak_to_strong`: majority vote over the n samples decides against a weak supervisor's answer: below `skip_below`
  confidence the prompt is skipped, at `overrule_at` or above the student's majority overrules the weak label.

No Ray, no torch: the controller calls these between actor calls.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from rayscale.config import StepControlledConfig, WeakToStrongConfig
from rayscale.text import split_at_step, step_starts
from rayscale.types import PreferencePair, RolloutRequest, Sample


@dataclass
class Graded:
    """A rollout sample with the verifier's verdict."""

    sample: Sample
    correct: bool
    pred: str | None = None


def _pair(g_chosen: Graded | Sample, chosen: str, rejected: str, strategy: str, prefix: str = "",
          chosen_ended: bool = True, rejected_ended: bool = True) -> PreferencePair:
    s = g_chosen.sample if isinstance(g_chosen, Graded) else g_chosen
    return PreferencePair(
        prompt_id=s.prompt_id, prompt=s.prompt, chosen=chosen, rejected=rejected, shared_prefix=prefix,
        strategy=strategy, policy_version=s.policy_version, chosen_ended=chosen_ended, rejected_ended=rejected_ended,
    )


def _ended(s: Sample) -> bool:
    return s.finish_reason != "length"


def distinct_samples(graded: Sequence[Graded]) -> list[Graded]:
    """One sample per distinct response text (the first of each, in order): duplicates add no signal and
    over-weight easy prompts."""
    seen: dict[str, Graded] = {}
    for g in graded:
        seen.setdefault(g.sample.response, g)
    return list(seen.values())




# ------------------------------------------------------------------------------------------------ outcome
def outcome_pairs(graded: Sequence[Graded], rng: random.Random, max_pairs: int = 2) -> list[PreferencePair]:
    """Up to `max_pairs` (correct, wrong) pairs from one prompt's samples; none if all agree."""
    right = distinct_samples([g for g in graded if g.correct])
    wrong = distinct_samples([g for g in graded if not g.correct])
    rng.shuffle(right)
    rng.shuffle(wrong)
    return [
        _pair(c, c.sample.response, w.sample.response, "outcome", "", _ended(c.sample), _ended(w.sample))
        for c, w in zip(right, wrong)
    ][:max_pairs]


# ------------------------------------------------------------------------------------------------ correction
def first_step(text: str, ended: bool) -> tuple[str, bool]:
    """(the first step of `text` with its newline, whether that step ends the response): a step that is not the last
    line is cut after its newline and carries no EOS."""
    starts = step_starts(text)
    if len(starts) < 2:
        return text, ended
    return text[: starts[1]], False


def correction_pair(wrong: Sample, wrong_step: int, corrected_continuation: str,
                    span: str = "rest") -> PreferencePair | None:
    """Chosen = student's steps before `wrong_step` + the teacher's continuation; rejected = the student's own.

    `span="rest"` (LEMA-style) compares the whole continuations; `span="step"` (SuperCorrect's cross-model DPO,
    Step-DPO) only the teacher's corrected step against the student's first wrong step, so the loss sits on the
    decision that went wrong and not on the tokens that merely follow from it.
    Returns None when the two sides are identical (nothing to prefer), the step index is out of range, or a side
    would carry no loss: empty and cut off by the token limit (a student truncated right at its first wrong step).
    """
    response = wrong.response
    if not 0 <= wrong_step <= len(step_starts(response)):
        return None
    prefix, rejected = split_at_step(response, wrong_step)
    chosen, chosen_ended, rejected_ended = corrected_continuation.lstrip("\n"), True, _ended(wrong)
    if span == "step":
        chosen, chosen_ended = first_step(chosen, chosen_ended)
        rejected, rejected_ended = first_step(rejected, rejected_ended)
    if chosen.strip() == rejected.strip() or (not chosen and not chosen_ended) or (not rejected and not rejected_ended):
        return None
    return _pair(wrong, chosen, rejected, "correction", prefix, chosen_ended, rejected_ended)


def wrong_samples_to_correct(graded: Sequence[Graded], max_per_prompt: int, rng: random.Random) -> list[Graded]:
    """The distinct wrong samples of one prompt that go to the teacher (at most `max_per_prompt`)."""
    wrong = distinct_samples([g for g in graded if not g.correct])
    rng.shuffle(wrong)
    return wrong[:max_per_prompt]


# ------------------------------------------------------------------------------------------------ step-controlled
def step_temperature(k: int, attempt: int, cfg: StepControlledConfig) -> float:
    """SCDPO's schedule: later steps (and later retries) resample hotter, capped at t_max."""
    return min(cfg.t0 + cfg.delta * (k + attempt), cfg.t_max)


def step_controlled_requests(
    correct: Sequence[Graded], cfg: StepControlledConfig, rng: random.Random, attempt: int, seed: int
) -> list[tuple[Graded, int, RolloutRequest]]:
    """For each correct sample, a continuation request from a step k drawn uniformly among its steps."""
    out = []
    for i, g in enumerate(correct):
        n_steps = len(step_starts(g.sample.response))
        if n_steps < 2:  # need at least one step to resample and an answer line after it
            continue
        k = rng.randrange(n_steps - 1)
        prefix, _ = split_at_step(g.sample.response, k)
        out.append((g, k, RolloutRequest(
            prompt_id=g.sample.prompt_id, prompt=g.sample.prompt, prefix=prefix, n=1,
            temperature=step_temperature(k, attempt, cfg), seed=seed + i,
        )))
    return out


def step_controlled_pair(original: Sample, k: int, resampled: Sample) -> PreferencePair:
    prefix, chosen = split_at_step(original.response, k)
    return _pair(original, chosen, resampled.text, "step_controlled", prefix, _ended(original), _ended(resampled))


# ------------------------------------------------------------------------------------------------ weak-to-strong
def majority_vote(graded: Sequence[Graded]) -> tuple[str | None, float]:
    """The most common extracted answer and the fraction of all samples that gave it."""
    answers = [g.pred for g in graded if g.pred is not None]
    if not answers:
        return None, 0.0
    answer, count = Counter(answers).most_common(1)[0]
    return answer, count / len(graded)


def weak_to_strong_label(graded: Sequence[Graded], weak_answer: str | None,
                         cfg: WeakToStrongConfig) -> tuple[str | None, str]:
    """(label, decision): the answer to treat as right for this prompt, or None to skip it, and why."""
    majority, confidence = majority_vote(graded)
    if majority is None or confidence < cfg.skip_below:
        return None, "skip_low_confidence"
    if weak_answer is None or confidence >= cfg.overrule_at:
        return majority, "majority" if weak_answer is None or weak_answer == majority else "overruled_weak"
    return weak_answer, "weak"


def weak_to_strong_pairs(graded: Sequence[Graded], label: str, rng: random.Random,
                         max_pairs: int = 2) -> list[PreferencePair]:
    """Outcome-style pairs judged against the pseudo-label instead of the gold answer."""
    relabelled = [Graded(g.sample, g.pred == label, g.pred) for g in graded]
    return [dataclasses.replace(p, strategy="weak_to_strong") for p in outcome_pairs(relabelled, rng, max_pairs)]


# ------------------------------------------------------------------------------------------------ mixing
def strategy_mix(strategy: str | dict[str, float]) -> dict[str, float]:
    """`algo.strategy` read once, the same way everywhere: {name: weight} of the strategies a run uses (one name
    is {name: 1.0}; a mix keeps its positive weights, in its own order)."""
    if isinstance(strategy, str):
        return {strategy: 1.0}
    return {name: float(w) for name, w in strategy.items() if w > 0}


def assign_strategies(prompt_ids: Sequence[str], strategy: str | dict[str, float],
                      rng: random.Random) -> dict[str, str]:
    """Which strategy builds the pairs of each prompt: one name for all, or a weighted draw per prompt."""
    mix = strategy_mix(strategy)
    if isinstance(strategy, str):  # one strategy draws nothing from rng (seeded runs stay as they were)
        return {pid: strategy for pid in prompt_ids}
    return {pid: rng.choices(list(mix), list(mix.values()))[0] for pid in prompt_ids}
