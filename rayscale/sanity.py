"""Settings that load fine but cannot produce learning, caught before a run spends hours on them: each is refused
(ConfigError, exit 2) or warned once with the number. `algo.samples_per_prompt=1` with a two-sample strategy is
refused by the config itself (rayscale.config); the checks here need the data, the tokenizer or the machine."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from rayscale.config import RayscaleConfig
from rayscale.data import Problem
from rayscale.errors import ConfigError
from rayscale.prompts import render_prompt

log = logging.getLogger(__name__)
OVERSUBSCRIBE_REFUSED = 4  # a local plan asking more than this many CPUs per core is refused (it would crawl)


def check_prompt_lengths(lengths: Sequence[int], max_seq_len: int, max_new_tokens: int) -> str | None:
    """Refuse `learner.max_seq_len` when no prompt leaves room for a response (every pair would be cut to its
    prompt, the chosen side included); a warning (returned) when some prompts do, or when a full-length response
    would be cut. `lengths`: prompt token counts of (a sample of) the training data."""
    if not lengths:
        return None
    n = len(lengths)
    full = sum(1 for x in lengths if x >= max_seq_len)
    if full == n:
        raise ConfigError(f"learner.max_seq_len={max_seq_len} is shorter than every prompt of the data (the "
                          f"shortest of {n} checked has {min(lengths)} tokens, the longest {max(lengths)}): every "
                          "pair would be cut to its prompt and teach nothing; raise learner.max_seq_len to at least "
                          f"{max(lengths) + max_new_tokens} (longest prompt + rollout.max_new_tokens)")
    if full:
        return (f"learner.max_seq_len={max_seq_len}: {full} of {n} prompts checked are that long or longer; their "
                f"pairs teach nothing (raise it to {max(lengths) + max_new_tokens} to fit them with a full response)")
    cut = sum(1 for x in lengths if x + max_new_tokens > max_seq_len)
    if cut:
        return (f"learner.max_seq_len={max_seq_len}: {cut} of {n} prompts checked leave less room than "
                f"rollout.max_new_tokens={max_new_tokens}; their longer responses are cut from the right in training")
    return None


def check_local_cpus(plan_cpus: float, cores: int, declared: int | None) -> str | None:
    """A local Ray for a plan of `plan_cpus` CPUs on `cores` cores: refused past OVERSUBSCRIBE_REFUSED per core,
    a warning (returned) past one per core, unless `cluster.num_cpus` (`declared`) says how many to declare."""
    if declared is not None or plan_cpus <= cores:
        return None
    if plan_cpus > OVERSUBSCRIBE_REFUSED * cores:
        raise ConfigError(f"the plan asks for {plan_cpus:g} CPUs and this machine has {cores} cores: a local Ray "
                          f"declared that large runs every actor on a sliver of a core. Lower cluster.<role>.num_cpus "
                          "(`rayscale plan` lists them), or set cluster.num_cpus to declare that many anyway")
    return (f"the plan asks for {plan_cpus:g} CPUs on {cores} cores: actors share cores (Ray's CPUs are scheduling "
            "tokens); set cluster.num_cpus to say this is meant")


def check_prompts_fit(cfg: RayscaleConfig, tokenizer, problems: list[Problem], sample: int = 256) -> None:
    """Refuse a learner.max_seq_len no prompt fits in (ConfigError), warn once when some do not."""
    prompts = [render_prompt(tokenizer, p.question, cfg.data.prompt_style, cfg.data.use_chat_template)
               for p in problems[:sample]]
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]] if prompts else []
    warning = check_prompt_lengths(lengths, cfg.learner.max_seq_len, cfg.rollout.max_new_tokens)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
