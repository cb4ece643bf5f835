"""learner.lora: peft adapters on the policy. Only adapters train; weight sync, HF export, greedy and checkpoints
carry the merged model under the base names. One in-process LearnerEngine rank (gloo, world size 1, no Ray) on a
tiny model whose greedy output says something (tests/tiny_models.py), fp32 on CPU."""

from __future__ import annotations

import copy
import json
import os
from unittest import mock

import pytest
import torch
import torch.distributed as dist

from rayscale.config import AlgoConfig, LearnerConfig, LoraSettings, RolloutConfig
from rayscale.config_loading import load_config
from rayscale.errors import ConfigError
from rayscale.learner import lora
from rayscale.learner.engine import REFERENCE_ADAPTER, LearnerEngine
from rayscale.types import PreferencePair, RolloutRequest
from tests.actor_state import engine_greedy

peft = pytest.importorskip("peft")  # the `test` extra installs it (rayscale[lora])

ALGO = AlgoConfig(loss="sigmoid", beta=0.1)
LORA = {"enabled": True, "rank": 4, "alpha": 16.0}
PROMPTS = ["3+4*2=", "12-5=", "7*8+1="]
GREEDY_TOKENS = 12
SMALL_BUCKET = 16 << 10  # many buckets, so the bucketing of merged tensors is exercised


def _pairs(seed: int, n: int = 4) -> list[PreferencePair]:
    return [PreferencePair(f"{seed}-{i}", f"<|user|>{seed + i}+{i}<|assistant|>", f"{seed + 2 * i}=ok",
                           f"{seed - i}?no", rejected_ended=i % 2 == 0) for i in range(n)]


def _cfg(**kw) -> LearnerConfig:
    base = {"num_ranks": 1, "zero_stage": 2, "lr": 2e-2, "micro_batch_size": 2, "max_seq_len": 48,
            "collective_timeout_s": 120, "lora": LORA}
    return LearnerConfig(**{**base, **kw})


def _engine(model_dir: str, cfg: LearnerConfig, ref_model_path: str | None = None) -> LearnerEngine:
    """A rank-0-of-1 engine in this process. The process group is made once per process (DeepSpeed keeps its own
    handles to it, so it cannot be torn down and made again); later engines join the same one."""
    engine = LearnerEngine(0, 1, model_dir, cfg, ALGO, ref_model_path=ref_model_path or model_dir)
    if not dist.is_initialized():
        engine.init("127.0.0.1", engine.create_store("127.0.0.1"))
    else:
        engine._store = object()  # not used: the group exists
        with mock.patch.object(dist, "init_process_group"):
            engine.init("127.0.0.1", 0)
    return engine


def _adapters(engine: LearnerEngine, adapter: str) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in engine.hf_model.named_parameters() if f".{adapter}." in n}


def _base(engine: LearnerEngine) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in lora.base_named_parameters(engine.hf_model)}


def _sync(engine: LearnerEngine) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in engine.iter_params_for_sync()}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.tiny_models import diverse_tiny_model

    return diverse_tiny_model(tmp_path_factory.mktemp("lora") / "model", seed=3)


@pytest.fixture(scope="module")
def trained(model_dir):
    """An engine before and after 3 DPO steps (ZeRO-2). Restores the environment the engine's init set."""
    saved_env = dict(os.environ)
    engine = _engine(model_dir, _cfg())
    before = {"base": _base(engine), "default": _adapters(engine, lora.ADAPTER),
              "reference": _adapters(engine, lora.REFERENCE)}
    metrics = [engine.train_dpo(_pairs(s), 4) for s in range(3)]
    yield engine, before, metrics
    if dist.is_initialized():
        dist.destroy_process_group()
    os.environ.clear()
    os.environ.update(saved_env)


# ------------------------------------------------------------------------------------------------ config
def test_lora_is_off_by_default_and_its_keys_are_checked():
    assert not LearnerConfig().lora.enabled
    assert LoraSettings().target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"]
    with pytest.raises(ConfigError, match=r"learner\.lora\.rank: Input should be greater than 0"):
        load_config(overrides=["learner.lora.enabled=true", "learner.lora.rank=0"])
    with pytest.raises(ConfigError, match=r"learner\.lora\.rank"):
        load_config(overrides=["learner.lora.rank=-4"])
    with pytest.raises(ConfigError, match="target_modules is empty"):
        load_config(overrides=["learner.lora.target_modules=[]"])
    with pytest.raises(ConfigError, match="names a module twice"):
        load_config(overrides=["learner.lora.target_modules=[q_proj, q_proj]"])
    with pytest.raises(ConfigError, match=r"learner\.lora\.sync"):
        load_config(overrides=["learner.lora.sync=adapter"])
    with pytest.raises(ConfigError, match="unknown key 'learner.lora.rnak'; did you mean rank"):
        load_config(overrides=["learner.lora.rnak=8"])


def test_lora_rejects_zero3_layouts():
    with pytest.raises(ConfigError, match=r"needs learner\.zero_stage 0, 1 or 2"):
        load_config(overrides=["learner.lora.enabled=true", "learner.zero_stage=3"])
    with pytest.raises(ConfigError, match=r"learner\.ref_mode must be precompute or replicated"):
        load_config(overrides=["learner.lora.enabled=true", "learner.ref_mode=zero3"])
    load_config(overrides=["learner.zero_stage=3", "learner.ref_mode=zero3"])  # without LoRA: as before


def test_unknown_target_modules_name_the_model_s_linear_layers(model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with pytest.raises(ConfigError, match=r"\['qkv_proj'\] match no linear layer of this LlamaForCausalLM; its "
                                          r"linear layers are named down_proj, gate_proj, k_proj, o_proj, q_proj"):
        lora.wrap(model, LoraSettings(enabled=True, target_modules=["q_proj", "qkv_proj"]), False)
    with pytest.raises(ConfigError, match="is the LM head"):
        lora.wrap(model, LoraSettings(enabled=True, target_modules=["lm_head"]), False)
    assert not any("lora_" in n for n, _ in model.named_parameters())  # checked before anything was injected


# ------------------------------------------------------------------------------------------------ training
def test_a_dpo_step_trains_the_adapter_and_nothing_else(trained):
    engine, before, metrics = trained
    assert metrics[0]["rewards/chosen"] == 0 and metrics[0]["rewards/margins"] == 0  # reference == start policy
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    base = _base(engine)
    assert base.keys() == before["base"].keys()
    assert all(torch.equal(base[n], before["base"][n]) for n in base)  # every base weight bit-identical
    default = _adapters(engine, lora.ADAPTER)
    assert any(not torch.equal(default[n], before["default"][n]) for n in default if ".lora_B." in n)
    reference = _adapters(engine, lora.REFERENCE)
    assert all(torch.equal(reference[n], before["reference"][n]) for n in reference)
    assert all(not t.any() for n, t in reference.items() if ".lora_B." in n)  # still exactly the base model
    # the optimizer holds the trained adapter and nothing else
    trainable = {id(p) for n, p in engine.hf_model.named_parameters() if f".{lora.ADAPTER}." in n}
    in_optimizer = {id(p) for p in engine.policy.optimizer.bit16_groups[0]}
    assert in_optimizer == trainable and all(p.requires_grad == (id(p) in trainable)
                                              for p in engine.hf_model.parameters())


def test_zero0_with_activation_checkpointing_trains_only_the_adapter_too(trained, model_dir):
    engine = _engine(model_dir, _cfg(zero_stage=0, ref_mode="replicated", gradient_checkpointing=True))
    assert engine.hf_model.is_gradient_checkpointing
    base = _base(engine)
    metrics = engine.train_dpo(_pairs(7), 4)
    assert metrics["grad_norm"] > 0
    assert all(torch.equal(t, base[n]) for n, t in _base(engine).items())
    assert any(t.any() for n, t in _adapters(engine, lora.ADAPTER).items() if ".lora_B." in n)


@pytest.mark.ray
def test_two_ranks_train_the_adapter_like_one(trained, model_dir, local_ray):
    """DeepSpeed's gradient all-reduce over the adapters only (the frozen base has no gradient), on Ray actors."""
    from rayscale.actors.learner import LearnerGroup
    from rayscale.config import RoleResources
    from tests.actor_state import learner_state

    batches = [_pairs(s) for s in (20, 21)]
    one = _engine(model_dir, _cfg())
    expected = [one.train_dpo(b, len(b)) for b in batches]
    with LearnerGroup(model_dir, _cfg(num_ranks=2), ALGO, RoleResources(num_cpus=1)) as group:
        assert group.info[0]["trainable_parameters"] == sum(t.numel() for t in _adapters(one, lora.ADAPTER).values())
        metrics = [group.train_dpo(b) for b in batches]
        state = learner_state(group)
    for m, e in zip(metrics, expected):
        for key in ("loss", "rewards/margins", "grad_norm"):
            assert m[key] == pytest.approx(e[key], abs=1e-5), key
    want = one.gather_state_for_sync()
    # Adam turns rounding-level gradient differences into ~1e-5 steps; a wrong reduction would be ~lr (2e-2)
    assert state.keys() == want.keys() and all(torch.allclose(state[n], want[n], atol=2e-4) for n in want)


# ------------------------------------------------------------------------------------------------ outputs
def test_sync_tensors_are_the_merged_model_under_the_base_names(trained, model_dir):
    from transformers import AutoModelForCausalLM

    engine, before, _ = trained
    base_model = AutoModelForCausalLM.from_pretrained(model_dir)
    sent = list(engine.iter_params_for_sync())
    assert [n for n, _ in sent] == [n for n, _ in base_model.named_parameters()]  # same names, same order
    merged = copy.deepcopy(engine.weights.peft_model).merge_and_unload().state_dict()  # peft's own merge, on a copy
    for name, tensor in sent:
        assert torch.equal(tensor, merged[name]), name
    assert any(not torch.equal(t, before["base"][n]) for n, t in sent)  # the adapter is in there
    state = engine.gather_state_for_sync()
    assert list(state) == list(base_model.state_dict())  # tied lm_head alias included, no adapter names
    assert all(torch.equal(state[n], merged[n]) for n in state)
    assert all(torch.equal(t, before["base"][n]) for n, t in _base(engine).items())  # merging mutated nothing


def test_a_rollout_engine_on_the_synced_weights_generates_like_the_lora_policy(trained, model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from rayscale.rollout.hf_engine import HFBackend, HFEngine
    from rayscale.sync import output_check
    from rayscale.wire.buckets import iter_buckets

    engine, _, _ = trained
    rollout_cfg = RolloutConfig(device="cpu", temperature=0.0, max_new_tokens=GREEDY_TOKENS)
    backend = HFBackend(HFEngine.from_path(model_dir, rollout_cfg, dtype="float32"))
    requests = [RolloutRequest(f"p{i}", p, temperature=0.0, seed=0) for i, p in enumerate(PROMPTS)]
    base_tokens = [s.token_ids for (s,) in backend.generate(requests, 0)]
    backend.load_buckets(iter_buckets(engine.iter_params_for_sync(), SMALL_BUCKET, "cpu"))  # every tensor arrives
    engine_tokens = [s.token_ids for (s,) in backend.generate(requests, 1)]
    assert engine_tokens == engine_greedy(engine, PROMPTS, GREEDY_TOKENS)  # eval(): adapter dropout off
    assert engine_tokens != base_tokens  # the trained adapter changed what the model says
    scored = engine.score_greedy(PROMPTS, engine_tokens)
    assert not output_check.disagreements(engine_tokens, scored["scores"], output_check.tolerance("float32"))
    engine.export_hf(str(tmp_path / "hf"))  # the HF export is the merged model too, loadable by anything
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").state_dict()
    state = engine.gather_state_for_sync()
    assert exported.keys() == state.keys() and all(torch.equal(exported[n], state[n]) for n in state)


# ------------------------------------------------------------------------------------------------ reference
def test_a_separate_reference_copy_gets_the_merged_weights(trained, model_dir, tmp_path):
    import shutil

    other = shutil.copytree(model_dir, tmp_path / "ref")  # model.ref_path: a model of its own, so a copy
    engine = _engine(model_dir, _cfg(ref_mode="replicated"), ref_model_path=str(other))
    assert not engine.weights.reference_in_policy and not _adapters(engine, lora.REFERENCE)
    engine.train_dpo(_pairs(1), 4)
    engine.set_reference_from_policy()
    ref = dict(engine.ref.model.named_parameters())
    assert all(torch.equal(ref[n], t) for n, t in engine.iter_params_for_sync())
    # W' = W + s·B@A in one matrix vs W·x + s·B(A·x): equal up to float rounding, not bit for bit
    assert engine.train_dpo(_pairs(2), 4)["rewards/margins"] == pytest.approx(0, abs=1e-5)


# ------------------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_and_resume_keep_the_adapters_and_the_reference(trained, model_dir, tmp_path):
    engine, before, _ = trained
    engine.set_reference_from_policy()  # the reference adapter := the trained one: policy == reference
    after_refresh = engine.train_dpo(_pairs(10), 4)
    assert after_refresh["rewards/chosen"] == 0 and after_refresh["rewards/margins"] == 0
    assert any(t.any() for n, t in _adapters(engine, lora.REFERENCE).items() if ".lora_B." in n)
    ckpt = tmp_path / "ckpt"
    engine.save_checkpoint(str(ckpt))
    saved = _sync(engine)
    next_steps = [engine.train_dpo(_pairs(s), 4) for s in (11, 12)]
    after = _sync(engine)

    fresh = _engine(model_dir, _cfg())  # from the base model: adapters at their initial values
    assert not all(torch.equal(t, saved[n]) for n, t in _sync(fresh).items())
    state = fresh.load_checkpoint(str(ckpt))
    assert state["lora"] is True and state["reference"] == REFERENCE_ADAPTER
    assert json.loads((ckpt / "learner_state.json").read_text())["step"] == engine.step - 2 == fresh.step
    assert not (ckpt / "reference").exists()  # the reference adapter lives in the DeepSpeed module state
    loaded = _sync(fresh)
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[n], saved[n]) for n in saved)
    for name, t in _adapters(engine, lora.REFERENCE).items():
        assert torch.equal(_adapters(fresh, lora.REFERENCE)[name], t)
    resumed = [fresh.train_dpo(_pairs(s), 4) for s in (11, 12)]  # optimizer moments came back too
    for m, e in zip(resumed, next_steps):
        for key in ("loss", "rewards/margins", "grad_norm"):
            assert m[key] == pytest.approx(e[key], abs=1e-6), key
    assert all(torch.allclose(t, after[n], atol=1e-6) for n, t in _sync(fresh).items())


def test_a_lora_checkpoint_does_not_load_into_a_full_model_learner(trained, model_dir, tmp_path):
    engine, _, _ = trained
    engine.save_checkpoint(str(tmp_path / "ckpt"))
    full = LearnerEngine(0, 1, model_dir, _cfg(lora={"enabled": False}), ALGO)  # refused before any weight loads
    with pytest.raises(ValueError, match=r"saved with learner\.lora; resume with the same learner\.lora\.enabled"):
        full.load_checkpoint(str(tmp_path / "ckpt"))
