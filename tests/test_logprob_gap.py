"""The logprob gap (rayscale.sync.logprob_gap): engine vs learner log-probabilities of the tokens the engine sampled,
every iteration, and `sync.max_logprob_gap` stopping a run whose sync silently loaded nothing."""

from __future__ import annotations

import json
import logging

import pytest

from rayscale.config import SyncConfig
from rayscale.config_loading import load_config
from rayscale.sync import logprob_gap as LG
from rayscale.types import PreferencePair, RolloutRequest, Sample


def _sample(pid: str, text: str, version: int = 3, prefix: str = "", logprobs=(-0.5, -1.0)) -> Sample:
    return Sample(pid, "Q", prefix, text, token_ids=list(range(len(logprobs))), logprobs=list(logprobs),
                  policy_version=version)


def test_only_engine_sampled_responses_the_pairs_train_on_of_the_current_version_count():
    right, wrong, other = _sample("a", "4"), _sample("a", "5"), _sample("a", "6")
    continued = _sample("b", " then 7", prefix="step 1.")  # the prefix is context, its tokens are the sample's own
    stale, bare = _sample("c", "1", version=2), _sample("c", "2", logprobs=())
    pairs = [PreferencePair("a", "Q", chosen="4", rejected="5"),
             PreferencePair("b", "Q", chosen="teacher's text", rejected=" then 7", shared_prefix="step 1."),
             PreferencePair("c", "Q", chosen="1", rejected="2")]
    got = LG.trained_samples(pairs, [[right, wrong, other, right], [continued], [stale, bare]], version=3)
    assert got == [right, wrong, continued]  # not the unpaired one, nor a repeat, nor teacher text, stale or bare


def test_the_gap_is_the_mean_per_token_and_the_worst_sequence_mean():
    g = LG.gap([[-1.0, -2.0], [-0.5]], [[-1.5, -2.0], [-0.5]])
    assert g == {"logprob_gap": pytest.approx(0.5 / 3), "logprob_gap_max": pytest.approx(0.25)}
    assert LG.gap([], []) == {"logprob_gap": None, "logprob_gap_max": None}


def test_the_learner_scores_what_an_hf_engine_on_the_same_weights_sampled_to_noise(tiny_model_dir):
    from rayscale.config import RolloutConfig
    from rayscale.rollout.hf_engine import HFEngine

    engine = HFEngine.from_path(tiny_model_dir, RolloutConfig(max_new_tokens=12, batch_size=8))
    requests = [RolloutRequest("p", "<|user|>3+4<|assistant|>", n=3, seed=1, logprobs=True),
                RolloutRequest("q", "<|user|>9-2<|assistant|>", n=2, seed=2, logprobs=True, prefix="7")]
    samples = [s for group in engine.generate(requests) for s in group]
    assert all(s.logprobs and len(s.logprobs) == len(s.token_ids) for s in samples)
    learner = LG.score_tokens(engine.model, engine.tokenizer, [(s.prompt, s.prefix) for s in samples],
                              [s.token_ids for s in samples])
    g = LG.gap([s.logprobs for s in samples], learner)
    assert g["logprob_gap"] < 1e-4 and g["logprob_gap_max"] < 1e-4  # fp32 on both sides: kernel noise only
    # and a gap is seen: the same tokens against a slightly other model
    import torch

    with torch.no_grad():
        engine.model.get_input_embeddings().weight.mul_(1.5)
    moved = LG.score_tokens(engine.model, engine.tokenizer, [(s.prompt, s.prefix) for s in samples],
                            [s.token_ids for s in samples])
    assert LG.gap([s.logprobs for s in samples], moved)["logprob_gap"] > 1e-2


def test_the_coordinator_warns_or_stops_on_a_gap_above_the_limit(caplog):
    from rayscale.sync.coordinator import LogprobGapError, WeightSync

    gaps = {"logprob_gap": 0.5, "logprob_gap_max": 2.0}
    WeightSync(SyncConfig()).check_logprob_gap(gaps, 3)  # no limit: only recorded
    WeightSync(SyncConfig(max_logprob_gap=1.0)).check_logprob_gap(gaps, 3)  # within it
    WeightSync(SyncConfig(max_logprob_gap=0.1)).check_logprob_gap({"logprob_gap": None}, 3)  # nothing measured
    with caplog.at_level(logging.WARNING):
        WeightSync(SyncConfig(max_logprob_gap=0.1, logprob_gap_action="warn")).check_logprob_gap(gaps, 3)
    assert "policy version 3" in caplog.text
    with pytest.raises(LogprobGapError, match=r"0.5 per token.*sync.max_logprob_gap 0.1; weight sync 3 \(broadcast"):
        WeightSync(SyncConfig(max_logprob_gap=0.1)).check_logprob_gap(gaps, 3)
    assert load_config(None, ["sync.max_logprob_gap=0.2"]).sync.logprob_gap_action == "stop"


# ------------------------------------------------------------------ a run whose sync silently loads nothing
def _took_version(worker, version: int) -> None:
    worker.version = version  # as after a receive that returned having loaded nothing


class _LoadsNothing:
    """A transport that reports a sync and loads nothing (vLLM #57022 on a CPU engine): the senders send, every
    worker reports the new version, no weight changes."""

    name = "broadcast"
    vllm_weight_transfer = None

    def push(self, coordinator, senders, rollout, version):
        from rayscale.sync.transports import CATCH_UP

        refs = coordinator.call([s.send_weights.remote(CATCH_UP, version, False) for s in senders])[0]
        coordinator.call([w.__ray_call__.remote(_took_version, version) for w in rollout.workers])
        return CATCH_UP.report(version, refs)


@pytest.mark.ray
def test_a_sync_that_loads_nothing_makes_the_gap_jump_and_stops_the_run(tmp_path, monkeypatch):
    from rayscale.controller import Trainer
    from rayscale.run_setup import prepare_run
    from rayscale.sync.coordinator import LogprobGapError
    from tests.test_loop import TINY

    cfg = load_config(None, [*TINY, f"tracking.run_dir={tmp_path}", "algo.iterations=4", "algo.eval_every=0",
                             "checkpoint.every=0", "learner.lr=5e-2", "learner.num_ranks=1",
                             "sync.max_logprob_gap=0.01"])
    trainer = Trainer(cfg, prepare_run(cfg))
    monkeypatch.setattr(trainer.weight_sync, "transport", _LoadsNothing())
    with pytest.raises(LogprobGapError) as failure:
        trainer.run()
    message = str(failure.value)
    assert "weight sync 1 (broadcast" in message and "policy version 1" in message, message
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # until the first sync every row's engines sampled from the learner's own weights: noise only
    assert rows and all(r["logprob_gap"] is not None for r in rows)
    assert max(r["logprob_gap"] for r in rows) < 1e-3 < float(message.split(" by ")[1].split()[0])
