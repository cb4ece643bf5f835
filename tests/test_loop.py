"""End to end: the controller drives all four actor kinds for 2 iterations of each strategy on a local Ray."""

from __future__ import annotations

import json

import pytest

from rayscale.config import TinyModelConfig
from rayscale.config_loading import load_config
from rayscale.controller import Trainer
from rayscale.models import make_tiny_model
from rayscale.run_setup import load_splits, prepare_run
from rayscale.text import split_steps
from rayscale.verify import verify_response

pytestmark = pytest.mark.ray

TINY = [
    "model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2", "model.tiny.intermediate_size=64",
    "data.synthetic.train_size=40", "data.synthetic.test_size=8", "data.synthetic.num_operands=2",
    "data.synthetic.operand_max=7", "data.synthetic.operators=+", "data.eval_size=8",
    "rollout.max_new_tokens=24", "rollout.batch_size=32",
    "verifier.num_workers=1",
    "learner.num_ranks=2", "learner.micro_batch_size=8", "learner.max_seq_len=64",
    "algo.iterations=2", "algo.prompts_per_iteration=8", "algo.samples_per_prompt=4", "algo.eval_every=1",
    "algo.sft.steps=200", "algo.sft.batch_size=16", "algo.sft.lr=3e-3",
    "tracking.wandb=false", "checkpoint.every=1",
    "cluster.teacher.num_cpus=0.1", "cluster.verifier.num_cpus=0.1", "cluster.rollout.num_cpus=0.5",
    "cluster.learner.num_cpus=0.5",
]


def run_with_inputs(tmp_path, *overrides):
    """The run's metrics rows, and its inputs (the problems, with their gold answers)."""
    cfg = load_config(None, [*TINY, f"tracking.run_dir={tmp_path}", *overrides])
    inputs = prepare_run(cfg)
    assert Trainer(cfg, inputs).run() == 0
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()], inputs


def run(tmp_path, *overrides):
    return run_with_inputs(tmp_path, *overrides)[0]


def check_strategy(strategy: str, rows: list[dict], logged: list[dict], gold: dict[str, str],
                   weak: dict[str, str] | None = None) -> None:
    """What only `strategy` makes: its own counters in the rows, and pairs of its kind in pairs.jsonl (each side
    graded against the gold answer by the same verify_response the verifier pool runs). `weak`: the weak
    supervisor's answers file, by problem id."""
    graded = lambda pid, text: verify_response(gold[pid], text)  # noqa: E731
    for p in logged:
        pid, prefix = p["prompt_id"], p["shared_prefix"]
        chosen, rejected = graded(pid, prefix + p["chosen"]), graded(pid, prefix + p["rejected"])
        if strategy == "weak_to_strong":  # judged against a pseudo-label, not the gold: the two answers differ
            assert chosen.pred is not None and chosen.pred != rejected.pred, p
            if weak is not None:  # below overrule_at (all 4 samples agreeing: no pair anyway) the file decides
                assert chosen.pred == weak[pid], p
            continue
        assert chosen.correct and not rejected.correct, p  # right against wrong
        if strategy == "outcome":  # two whole samples
            assert prefix == "", p
        elif strategy == "correction":  # the student's steps before the oracle's first wrong one, then two endings
            assert p["note"].startswith(f"step {len(split_steps(prefix)) + 1} wrong: "), p
        # step_controlled: the prefix and chosen side are one correct sample; the rejected side, wrong, can only
        # come from a continuation the rollout workers generated from that prefix
    for r in rows[1:]:
        if strategy == "outcome" and r["pairs"]:
            assert 0 < r["accuracy"] < 1  # a prompt with right and wrong samples
        if strategy == "correction":  # a pair or a counted rejection per teacher call, one call per wrong sample
            rejected = sum(v for k, v in r.items() if k.startswith("teacher_rejected/"))
            assert r["pairs"] + rejected <= round(r["samples"] * (1 - r["accuracy"]))
        if strategy == "step_controlled":  # each correct sample ends broken (a pair) or unbroken (counted)
            assert r["pairs"] + r["step_controlled/unbroken"] <= round(r["samples"] * r["accuracy"])
        if strategy == "weak_to_strong":  # one decision per prompt
            assert sum(v for k, v in r.items() if k.startswith("w2s/")) == 8
            if weak is not None and r["pairs"]:
                assert r["w2s/weak"] > 0


@pytest.mark.parametrize("strategy", ["outcome", "correction", "correction_streamed", "step_controlled",
                                      "weak_to_strong", "weak_to_strong_file"])
def test_two_iterations_per_strategy(local_ray, tmp_path, strategy):
    extra, weak_answers, streamed = [], None, strategy == "correction_streamed"
    if streamed:  # algo.stream_stages: graded and corrected chunk by chunk (2 workers, one request a chunk)
        strategy = "correction"
        extra = ["algo.stream_stages=true", "rollout.num_workers=2", "rollout.chunk_samples=4"]
    # weak_to_strong: skip_below=0.25, so a prompt is skipped only when no sample has an answer; at the default 0.6
    # (3 of 4 samples agreeing) this partly trained student skips nearly every prompt and builds no pair at all
    if strategy == "weak_to_strong_file":  # the weak supervisor: a fixed file of answers (the gold ones)
        strategy = "weak_to_strong"
        weak = tmp_path / "weak.jsonl"
        weak_answers = {p.id: p.gold_answer for p in load_splits(load_config(None, TINY))[0]}
        weak.write_text("".join(json.dumps({"id": i, "answer": a}) + "\n" for i, a in weak_answers.items()))
        extra = [f"algo.weak_to_strong.weak_answers_file={weak}", "algo.weak_to_strong.skip_below=0.25"]
    elif strategy == "weak_to_strong":  # the weak supervisor: a second, smaller model's greedy answers
        weak = make_tiny_model(tmp_path / "weak", TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2,
                                                                  intermediate_size=32, seed=9))
        extra = [f"algo.weak_to_strong.weak_model={weak}", "algo.weak_to_strong.skip_below=0.25"]
    rows, inputs = run_with_inputs(tmp_path, f"algo.strategy={strategy}", *extra)
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    for r in rows[1:]:
        assert r["samples"] == 8 * 4
        assert r["pairs"] == r[f"pairs/{strategy}"]  # every pair is this strategy's
        assert {"rollout", "verify", "train", "sync", "overhead"} <= set(r["time"])
        assert sum(r["time"].values()) == pytest.approx(r["iteration_s"], rel=1e-9)  # stages + overhead = wall
        assert "eval/greedy_acc" in r and "eval/sampled_acc" in r
        assert r["staleness"] == 0  # sync mode: every rollout on the latest weights
    # The strategy built pairs and the learner stepped on them: without this, a run that builds none passes.
    assert sum(r["pairs"] for r in rows[1:]) > 0
    for r in rows[1:]:  # the streaming stages did the grading and the teacher's work (and only they)
        busy = {k: v for k, v in r.items() if k.startswith("stream/busy_s/")}
        assert (set(busy) == {"stream/busy_s/verify", "stream/busy_s/teacher"}) == streamed, r
        if streamed:
            assert busy["stream/busy_s/verify"] > 0 and (busy["stream/busy_s/teacher"] > 0) == (r["accuracy"] < 1)
    version = 0
    for r in rows[1:]:
        stepped = r["pairs"] >= 2  # fewer pairs than learner ranks: no step
        version += stepped
        assert r["policy_version"] == version and ("learner/loss" in r) == stepped, r
    assert version >= 1
    assert (tmp_path / "final_model" / "config.json").is_file()
    # what the learner was taught, readable: up to tracking.log_pairs (8) pairs of each iteration
    logged = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()] \
        if (tmp_path / "pairs.jsonl").exists() else []
    for r in rows[1:]:
        mine = [p for p in logged if p["iteration"] == r["iteration"]]
        assert len(mine) == min(8, r["pairs"])
        assert all(p["strategy"] == strategy and p["prompt"] and (p["chosen"] or p["chosen_ended"]) for p in mine)
        if strategy == "correction":  # the oracle's explanation of the wrong step travels with the pair
            assert all(p["note"].startswith("step ") and "wrong:" in p["note"] for p in mine)
    check_strategy(strategy, rows, logged, {p.id: p.gold_answer for p in inputs.train}, weak_answers)
    # every held-out response of every evaluation: 8 greedy + 8 x 4 sampled (algo.eval_samples)
    for it in (0, 1, 2):
        samples = [json.loads(line) for line in (tmp_path / "samples" / f"eval_{it:04d}.jsonl").read_text().splitlines()]
        assert [s["mode"] for s in samples].count("greedy") == 8 and len(samples) == 8 + 8 * 4
        assert {"question", "response", "gold", "correct", "policy_version"} <= set(samples[0])
        assert sum(s["correct"] for s in samples if s["mode"] == "greedy") / 8 == rows[it]["eval/greedy_acc"]
    assert (tmp_path / "accuracy.png").is_file() and (tmp_path / "margins.png").is_file()
    assert (tmp_path / "checkpoints" / "iter_000002" / "controller.json").is_file()


def test_async_rollout_overlaps_training_and_logs_to_wandb_offline(local_ray, tmp_path):
    rows = run(tmp_path, "algo.strategy=outcome", "algo.async_rollout=true", "algo.iterations=3",
               "tracking.wandb=true")
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    for r in rows[1:]:
        assert {"train", "wait_rollout", "sync", "overhead"} <= set(r["time"])
    for r in rows[2:]:  # collected ahead: the loop's own stages + overhead = wall (the first collected inline)
        ahead = {"rollout", "verify", "outcome"}
        assert sum(v for k, v in r["time"].items() if k not in ahead) == pytest.approx(r["iteration_s"], rel=1e-9)
    # one step off-policy: iteration t+1 was collected while iteration t trained, so it never saw t's update
    assert rows[1]["staleness"] == 0
    for t in (2, 3):
        learned_before = rows[t - 1]["policy_version"] > rows[t - 2]["policy_version"]
        assert rows[t]["staleness"] == int(learned_before)
    assert list((tmp_path / "wandb").glob("offline-run-*")), "wandb wrote no offline run"


@pytest.mark.parametrize("source", ["templates", "corrections"])
def test_stage1_from_teacher_outputs(local_ray, tmp_path, capsys, source):
    """Stage 1 on the teacher's thought templates (SuperCorrect's HSFT) or on its corrections of the base model's
    own wrong solutions (LEMA), then one DPO iteration."""
    rows = run(tmp_path, f"algo.sft.source={source}", "algo.sft.steps=3", "algo.sft.num_problems=16",
               "algo.iterations=1", "algo.strategy=outcome")
    assert (tmp_path / "sft_model" / "config.json").is_file()
    assert [r["iteration"] for r in rows] == [0, 1]
    assert "stage 1 sft step 3/3" in capsys.readouterr().out


def test_eval_command_on_shared_gsm8k(local_ray, tiny_model_dir, shared_data, tmp_path, capsys):
    from rayscale.cli import main

    out = tmp_path / "preds.jsonl"
    assert main(["eval", "--model", tiny_model_dir, "--data", "gsm8k", "--limit", "4", "--output", str(out),
                 "rollout.max_new_tokens=8", "verifier.num_workers=1"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{"):])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"gsm8k/test/{i}" for i in range(4)]
    assert all(r["status"] in ("ok", "no_answer") and isinstance(r["correct"], bool) for r in rows)
    assert summary["problems"] == 4 and summary["accuracy"] == sum(r["correct"] for r in rows) / 4


def test_reference_refresh_anchors_the_next_iteration_at_the_current_policy(local_ray, tmp_path):
    rows = run(tmp_path, "algo.strategy=correction", "algo.ref_update_every=1", "algo.loss=sigmoid",
               "algo.eval_at_start=false")
    assert [r["iteration"] for r in rows] == [1, 2]  # the starting policy was not scored: no iteration-0 row
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["eval_0001.jsonl", "eval_0002.jsonl"]
    first, second = rows
    assert first["policy_version"] == 1 and "ref_update" in first["time"]  # the policy moved, then became the ref
    # policy == reference at the start of iteration 2's step: every implicit reward is exactly zero
    assert second["learner/rewards/chosen"] == 0.0 and second["learner/rewards/margins"] == 0.0

