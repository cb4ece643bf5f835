"""LearnerGroup on a local Ray cluster: ZeRO 1/2/3 over 2 ranks against 1 rank, checkpoint resume, export, bad
batches. Tiny model (hidden 64, 2 layers), fp32 on CPU, gloo."""

from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import pytest
import torch

from rayscale.config import AlgoConfig, LearnerConfig, RoleResources, TinyModelConfig
from rayscale.types import PreferencePair, SFTExample
from tests.actor_state import learner_state

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

STEPS_COMPARED = ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "grad_norm")


def _text(rng: random.Random, n: int) -> str:
    lines = []
    while sum(map(len, lines)) < n:
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        lines.append(f"{a}*{b}={a * b + rng.choice([0, 0, 1])}\n")
    return "".join(lines)[:n]


def _pairs(seed: int, n: int = 8) -> list[PreferencePair]:
    rng = random.Random(seed)
    return [PreferencePair(f"{seed}-{i}", f"<|user|>{_text(rng, rng.randint(4, 12))}<|assistant|>",
                           chosen=_text(rng, rng.randint(2, 20)), rejected=_text(rng, rng.randint(2, 30)),
                           shared_prefix=_text(rng, rng.choice([0, 0, 4, 9])), rejected_ended=rng.random() < 0.7)
            for i in range(n)]


DPO_BATCHES = [_pairs(s) for s in range(5)]  # 3 compared across layouts, 2 after the checkpoint
SFT_BATCH = [SFTExample(f"<|user|>{i}+{i}<|assistant|>", f"{i}+{i}={2 * i}\n\\boxed{{{2 * i}}}") for i in range(6)]


def _learner(**kw) -> LearnerConfig:
    # max_seq_len 40 truncates some of the longer responses, so the truncation path is in every comparison.
    base = {"micro_batch_size": 3, "lr": 1e-2, "max_seq_len": 40, "zero3_param_persistence_threshold": 0,
                "collective_timeout_s": 120}
    return LearnerConfig(**{**base, **kw})


LAYOUTS = {
    "1rank": {"num_ranks": 1, "zero_stage": 0, "ref_mode": "replicated"},
    "zero1": {"num_ranks": 2, "zero_stage": 1, "ref_mode": "replicated"},
    "zero2": {"num_ranks": 2, "zero_stage": 2, "ref_mode": "precompute"},
    "zero3": {"num_ranks": 2, "zero_stage": 3, "ref_mode": "zero3"},
}
ALGO = AlgoConfig(loss="sigmoid", beta=0.1)


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from rayscale.models import make_tiny_model

    cfg = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
    return str(make_tiny_model(tmp_path_factory.mktemp("learner") / "tiny", cfg))


SMALL_BUCKET = 32 << 10


def _group(model_dir, layout: str, **kw):
    from rayscale.actors.learner import LearnerGroup

    return LearnerGroup(model_dir, _learner(**LAYOUTS[layout]), ALGO, RoleResources(num_cpus=1), **kw)


def _script(group) -> list[dict]:
    """3 DPO steps then 1 SFT step."""
    return [group.train_dpo(b) for b in DPO_BATCHES[:3]] + [group.train_sft(SFT_BATCH)]


@pytest.fixture(scope="module")
def one_rank(ray_local, model_dir):
    with _group(model_dir, "1rank") as g:
        return _script(g)


@pytest.fixture(scope="module")
def zero3(ray_local, model_dir, tmp_path_factory):
    """ZeRO-3 group after the script, a checkpoint, and two more steps (kept for state-agnostic tests). Small
    buckets: every gather (export, checkpoint, reference copy) runs in many groups."""
    group = _group(model_dir, "zero3", bucket_bytes=SMALL_BUCKET)
    metrics = _script(group)
    ckpt = tmp_path_factory.mktemp("ckpt") / "step4"
    group.save_checkpoint(str(ckpt))
    after = [group.train_dpo(b) for b in DPO_BATCHES[3:5]]
    yield SimpleNamespace(group=group, metrics=metrics, ckpt=ckpt, after=after)
    group.shutdown()


def _assert_same_training(ours: list[dict], expected: list[dict], tol: float) -> None:
    for step, (m, e) in enumerate(zip(ours, expected, strict=True)):
        for key in STEPS_COMPARED if "rewards/margins" in e else ("loss", "grad_norm", "tokens"):
            assert m[key] == pytest.approx(e[key], abs=tol), f"step {step + 1} {key}"
        assert m["tokens"] == e["tokens"] and m["step"] == e["step"]


def test_gradient_checkpointing_trains_exactly_like_keeping_activations(one_rank, ray_local, model_dir):
    from rayscale.actors.learner import LearnerGroup

    cfg = _learner(**LAYOUTS["1rank"], gradient_checkpointing=True)
    with LearnerGroup(model_dir, cfg, ALGO, RoleResources(num_cpus=1)) as g:
        assert all(g._call_all("__ray_call__", lambda rank: rank.hf_model.is_gradient_checkpointing))
        metrics = _script(g)
    _assert_same_training(metrics, one_rank, tol=1e-5)


@pytest.mark.parametrize("layout", ["zero1", "zero2", "zero3"])
def test_two_ranks_train_like_one_rank(layout, one_rank, ray_local, model_dir, request):
    if layout == "zero3":
        metrics = request.getfixturevalue("zero3").metrics
    else:
        with _group(model_dir, layout) as g:
            metrics = _script(g)
    _assert_same_training(metrics, one_rank, tol=1e-4)
    assert metrics[2]["loss"] < metrics[0]["loss"] - 1e-3  # it trains (lr 1e-2), so equality is not vacuous
    assert sum(m.get("truncated/rejected", 0) for m in metrics[:3]) > 0


def test_checkpoint_resume_gives_identical_next_steps(zero3, model_dir):
    with _group(model_dir, "zero3") as fresh:
        state = fresh.load_checkpoint(str(zero3.ckpt))
        resumed = [fresh.train_dpo(b) for b in DPO_BATCHES[3:5]]
    assert state["step"] == 4
    # The second step after loading depends on the restored Adam moments and LR schedule, not only the weights.
    _assert_same_training(resumed, zero3.after, tol=1e-6)


def test_checkpoint_layout(zero3, model_dir):
    root = zero3.ckpt
    state = json.loads((root / "learner_state.json").read_text())
    # The reference is still the initial model, so it is recorded by path rather than saved again.
    assert state == {"step": 4, "num_ranks": 2, "zero_stage": 3, "reference": model_dir, "lora": False}
    assert not (root / "reference").exists()
    assert (root / "deepspeed" / "latest").read_text().strip() == "state"
    assert len(list((root / "deepspeed" / "state").glob("*optim_states.pt"))) == 2  # one ZeRO shard per rank
    assert (root / "hf" / "config.json").is_file() and (root / "hf" / "tokenizer_config.json").is_file()


def test_gather_state_is_the_full_hf_state_and_export_loads(zero3, model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    assert zero3.group._call_all("__ray_call__", lambda rank: rank.bucket_bytes) == [SMALL_BUCKET] * 2
    state = learner_state(zero3.group)
    zero3.group.export_hf(str(tmp_path / "export"))
    expected = AutoModelForCausalLM.from_pretrained(str(tmp_path / "export")).state_dict()
    assert set(state) == set(expected)  # HF names, no wrapper prefix, the tied lm_head alias included
    for name, tensor in expected.items():
        assert state[name].dtype == torch.float32 and torch.equal(state[name], tensor), name
    initial = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    assert not torch.equal(initial["model.norm.weight"], state["model.norm.weight"])  # trained, not the init


def test_bad_batches_are_clear_errors_and_the_group_survives(zero3):
    group = zero3.group
    with pytest.raises(ValueError, match="empty batch"):
        group.train_dpo([])
    with pytest.raises(ValueError, match="does not split evenly over 2 learner ranks"):
        group.train_dpo(DPO_BATCHES[0][:7])
    with pytest.raises(TypeError, match="expected PreferencePair"):
        group.train_dpo(SFT_BATCH[:2])
    # A shard that only one rank finds broken (bypassing the group's validation): both ranks raise together.
    with pytest.raises(Exception, match="another rank failed|object of type 'int'|text input must be of type"):
        group._call_all("train_dpo", per_rank=[(DPO_BATCHES[0][:4], 8), ([PreferencePair("x", 5, "a", "b")] * 4, 8)])
    metrics = group.train_dpo(DPO_BATCHES[0])  # still in lock step
    assert math.isfinite(metrics["loss"])


def test_set_reference_from_policy_zeroes_the_log_ratios(zero3):
    zero3.group.set_reference_from_policy()
    metrics = zero3.group.train_dpo(DPO_BATCHES[1])
    assert metrics["rewards/chosen"] == pytest.approx(0, abs=1e-5)
    assert metrics["rewards/margins"] == pytest.approx(0, abs=1e-5)
    assert metrics["loss"] == pytest.approx(math.log(2), abs=1e-5)


def test_a_rank_failing_outside_a_collective_shuts_the_group_instead_of_hanging(ray_local, model_dir):
    from rayscale.actors.learner import LearnerGroupError

    group = _group(model_dir, "zero3", failure_grace_s=3)
    # Rank 1 fails before the ZeRO-3 gathers (a bucket size it cannot compare); rank 0 is left inside the first
    # all-gather.
    ray.get(group.ranks[1].__ray_call__.remote(lambda rank: setattr(rank, "bucket_bytes", "not a size")))
    with pytest.raises(LearnerGroupError, match="rank 1 failed in set_reference_from_policy"):
        group._call_all("set_reference_from_policy")  # the group error, not a hang until the test timeout
    with pytest.raises(LearnerGroupError, match="shut down"):
        group.train_dpo(DPO_BATCHES[0])
    group.shutdown()
