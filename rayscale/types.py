"""Records that cross actor boundaries: rollout requests, samples, verifier results, preference pairs, SFT examples.

Plain dataclasses (picklable, no Ray, no torch) so every actor and every pure function agrees on one shape.
Texts, not token ids, cross the boundaries: the learner tokenizes each piece (prompt, shared prefix, continuation)
separately and concatenates the ids, so the loss-mask boundaries are exact whatever the tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RolloutRequest:
    prompt_id: str
    prompt: str  # rendered prompt text (chat template applied); the response starts right after it
    prefix: str = ""  # a partial response to continue from (correction / step-controlled strategies)
    n: int = 1  # samples for this request
    temperature: float | None = None  # None = rollout config
    seed: int | None = None  # per-request seed for reproducible sampling
    max_new_tokens: int | None = None
    logprobs: bool | None = None  # per-token logprobs of the samples; None = rollout.logprobs


@dataclass
class Sample:
    prompt_id: str
    prompt: str
    prefix: str  # echoed from the request; `text` continues it
    text: str  # generated continuation only (prefix excluded, stop string/EOS excluded)
    token_ids: list[int] = field(default_factory=list)  # generated ids (prefix excluded)
    finish_reason: str = "stop"  # "stop" (EOS or stop string) | "length"
    logprobs: list[float] | None = None  # per generated token, when asked for
    policy_version: int = 0

    @property
    def response(self) -> str:
        """The whole response: prefix + continuation."""
        return self.prefix + self.text



@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The verifier's verdict on one (gold answer, response): `rayscale.verify.verify_response` in-process,
    `IsolatedVerifier.verify_batch` and `VerifierPool.verify` one per item, in input order. Pickled across the
    verifier's process and actor boundaries; `dataclasses.asdict` gives the old dict, fields in this order."""

    correct: bool
    pred: str | None  # the extracted final answer; None when none was found (or the item failed before extraction)
    status: str  # ok / no_answer / timeout / error (rayscale.verify.STATUSES)
    reason: str  # how it was decided, or what went wrong
    latency_s: float = 0.0  # the item's time in its verifier process; 0.0 when graded in-process (not timed)


@dataclass
class PreferencePair:
    prompt_id: str
    prompt: str
    chosen: str  # continuation after shared_prefix
    rejected: str  # continuation after shared_prefix
    shared_prefix: str = ""  # response text common to both (student's correct steps): carries no loss
    strategy: str = "outcome"
    policy_version: int = 0
    # The learner appends EOS after a response that ended (not one cut off at max_new_tokens).
    chosen_ended: bool = True
    rejected_ended: bool = True
    note: str = ""  # why this pair, for the people reading pairs.jsonl (the teacher's explanation); not trained on


@dataclass
class SFTExample:
    prompt: str
    response: str  # the learner appends EOS
    prompt_id: str = ""
