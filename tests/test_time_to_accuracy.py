"""benchmarks/time_to_accuracy.py's pure parts: the wall-clock marks, one evaluator for every arm, the comparison
figures, and the TRL reward function against `rayscale verify` (no Ray, no TRL, no model)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from rayscale.cli import main as cli
from rayscale.verify import extract_answer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tta():
    spec = importlib.util.spec_from_file_location("time_to_accuracy", ROOT / "benchmarks" / "time_to_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["time_to_accuracy"] = module
    spec.loader.exec_module(module)
    return module


class FakeTime:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_marks_save_at_the_first_step_after_each_mark_with_the_real_time(tta, tmp_path):
    now = FakeTime()
    clock = tta.MarkClock(t0=now.t - 5.0, budget_s=600, every_s=120, now=now)  # 5 s of start-up already spent
    assert clock.marks() == [120, 240, 360, 480, 600]
    written = []

    def write(path):
        written.append(path)
        now.t += 7.0  # writing takes 7 s, off the clock

    steps = 0
    for step_s in [50.0] * 30:  # 50-second steps
        now.t += step_s
        steps += 1
        clock.save(write, tmp_path, steps)
        if clock.over():
            break
    # marks passed at 155, 255, 405, 505, 605 s of training (5 s start-up + 50-s steps): saved right then
    assert [s["t_s"] for s in clock.saves] == [155.0, 255.0, 405.0, 505.0, 605.0]
    assert [s["mark_s"] for s in clock.saves] == [120, 240, 360, 480, 600]
    assert clock.paused_s == pytest.approx(5 * 7.0) and len(written) == 5 and steps == 12
    assert written == [s["dir"] for s in clock.saves] and written[0].endswith("mark_01")


def test_a_step_longer_than_a_mark_saves_once_for_the_latest_mark(tta, tmp_path):
    now = FakeTime()
    clock = tta.MarkClock(t0=now.t, budget_s=300, every_s=60, now=now)
    now.t += 130  # one slow step passes the 60 and 120 marks
    clock.save(lambda _: None, tmp_path, 1)
    assert [(s["mark_s"], s["t_s"]) for s in clock.saves] == [(120, 130.0)]
    now.t += 10
    assert clock.save(lambda _: None, tmp_path, 2) is None and not clock.over()  # no new mark at 140 s


def test_time_to_reach_and_the_comparison(tta):
    def arm(points, per_problem):
        marks = [{"t_s": t, "greedy_acc": a} for t, a in points]
        return {"marks": marks, "final_greedy_acc": marks[-1]["greedy_acc"], "_final": per_problem}

    problems = [f"p{i}" for i in range(10)]
    report = {
        "correction": arm([(0, 0.5), (100, 0.6), (200, 0.7)], dict.fromkeys(problems, 1.0)),
        "trl_grpo": arm([(0, 0.5), (150, 0.55), (300, 0.6)], {p: float(i < 6) for i, p in enumerate(problems)}),
        "trl_online_dpo": arm([(0, 0.5), (290, 0.5)], {p: float(i < 5) for i, p in enumerate(problems)}),
    }
    assert tta.time_to_reach(report["correction"]["marks"], 0.6) == 100
    assert tta.time_to_reach(report["trl_online_dpo"]["marks"], 0.6) is None
    out = tta.compare(report, ["trl_grpo", "trl_online_dpo"])
    assert out["peer_best"] == "trl_grpo" and out["speedup_vs_peer_best"] == pytest.approx(300 / 100)
    assert out["final_vs_peer_best"]["diff"] == pytest.approx(0.4) and out["final_vs_peer_best"]["improved"] == 4
    report["correction"]["marks"] = [{"t_s": 0, "greedy_acc": 0.5}, {"t_s": 100, "greedy_acc": 0.55}]
    assert tta.compare(report, ["trl_grpo"])["speedup_vs_peer_best"] is None  # never reached GRPO's 0.6


def test_one_evaluator_scores_the_start_and_every_saved_policy_of_every_arm(tta, tmp_path, monkeypatch, capsys):
    setup = tta.Setup(tmp_path, str(tmp_path / "sft" / "sft_model"), [], "test", 4, 600, 120, "python")
    arms = list(tta.ARMS)
    for i, arm in enumerate(arms):
        d = tmp_path / "arms" / arm
        d.mkdir(parents=True)
        saves = [{"mark_s": 120 * k, "t_s": 120 * k + i, "steps": k, "dir": str(d / f"mark_{k:02d}")}
                 for k in (1, 2)]
        (d / "marks.json").write_text(json.dumps({"saves": saves, "finished": True, "startup_s": 10}))
    calls = []

    def fake_score(setup_, model_dir, out_file, reuse, split, modes=("greedy", "sampled")):
        calls.append((model_dir, split, modes))
        right = "mark_02" in model_dir
        return [{"mode": m, "id": f"p{j}", "correct": right or j == 0} for m in modes for j in range(4)]

    monkeypatch.setattr(tta, "score_policy", fake_score)
    choices = {arm: {"lr": 1e-5, "beta": None} for arm in arms}
    report = tta.score_and_report(setup, arms, choices, reuse=False)
    scored = [c[0] for c in calls]
    assert scored[0] == setup.sft_model and len(scored) == 1 + 2 * len(arms)
    assert {c[1:] for c in calls} == {("test", ("greedy", "sampled"))}  # the same split and modes for everyone
    for arm in arms:
        assert [m["t_s"] for m in report[arm]["marks"]][0] == 0.0  # the shared start, scored once
        assert report[arm]["final_greedy_acc"] == 1.0 and report[arm]["marks"][1]["greedy_acc"] == 0.25
    assert report["speedup_vs_peer_best"] is not None and report["final_vs_peer_best"]["diff"] == 0.0
    tta.print_table(report, arms)  # the report's table and plot from the same figures
    printed = capsys.readouterr().out
    assert all(arm in printed for arm in arms) and "speedup_vs_peer_best = " in printed
    tta.plot(report, arms, tmp_path / "tta.png")
    assert (tmp_path / "tta.png").stat().st_size > 10_000


def test_the_trl_reward_agrees_with_rayscale_verify_on_labelled_gsm8k(tta, shared_data, tmp_path, capsys):
    rows = [json.loads(line) for _, line in zip(range(150),
                                                (shared_data / "gsm8k_example_model_solutions.jsonl").open())]
    items = [{"gold": extract_answer(r["ground_truth"]), "response": r[m]["solution"], "label": r[m]["is_correct"]}
             for r in rows for m in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in items))
    assert cli(["verify", "--input", str(src), "--output", str(dst), "--workers", "1"]) == 0
    graded = [json.loads(line) for line in dst.read_text().splitlines()]
    rewards = tta.verifier_reward(prompts=["q"] * len(items), completions=[x["response"] for x in items],
                                  gold=[x["gold"] for x in items])
    assert rewards == [1.0 if g["correct"] else 0.0 for g in graded]
    assert 0.2 < sum(rewards) / len(rewards) < 0.8  # both verdicts occur: the comparison can fail
    # conversational completions (TRL's chat format) are graded on their text
    assert tta.verifier_reward([], [[{"role": "assistant", "content": "so \\boxed{18}"}]], ["18"]) == [1.0]


def test_the_sweep_picks_each_arms_best_dev_setting_and_async_takes_corrections(tta, tmp_path, monkeypatch):
    setup = tta.Setup(tmp_path, "sft", [], "test", 10, 600, 120, "python")
    runs = []

    def fake_run_arm(setup_, arm, arm_dir, choice, budget_s, reuse, split=None):
        runs.append((arm, choice["lr"], choice["beta"], split, budget_s))
        return {"saves": [{"dir": str(arm_dir / "mark_02"), "steps": 5}]}

    best = {"correction": 1e-5, "outcome": 3e-5, "trl_grpo": 3e-6, "trl_online_dpo": 1e-5}

    def fake_score(setup_, model_dir, out_file, reuse, split, modes=("greedy", "sampled")):
        assert split == "dev" and modes == ("greedy",)  # choices on the dev split, never on test
        arm, name = Path(model_dir).parts[-3:-1]
        lr = float(name.split("_")[0][2:])
        right = 8 if lr == best[arm] and not name.endswith("beta0") else 3
        return [{"mode": "greedy", "id": str(i), "correct": i < right} for i in range(10)]

    monkeypatch.setattr(tta, "run_arm", fake_run_arm)
    monkeypatch.setattr(tta, "score_policy", fake_score)
    tta.sweep(setup, list(tta.SWEPT), [3e-6, 1e-5, 3e-5], list(tta.SWEEP_GRPO_BETAS), 240, reuse=False)
    assert len(runs) == 3 * 3 + 3 * len(tta.SWEEP_GRPO_BETAS) and {r[3:] for r in runs} == {("dev", 240)}
    choices = tta.chosen(tmp_path / "sweep" / "sweep.json", list(tta.ARMS))
    assert choices["correction"] == {"lr": 1e-5, "beta": None} and choices["outcome"]["lr"] == 3e-5
    assert choices["trl_grpo"] == {"lr": 3e-6, "beta": 0.04} and choices["trl_online_dpo"]["lr"] == 1e-5
    assert choices["correction_async"] == choices["correction"]
