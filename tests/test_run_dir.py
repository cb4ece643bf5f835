"""Run directories that cannot mix or lose runs, and resume that survives a bad checkpoint (issue 21): pure file
tests, no Ray, no model."""

from __future__ import annotations

import json
import shutil

import pytest

from rayscale import checkpointing as C
from rayscale.config_loading import load_config
from rayscale.errors import ConfigError
from rayscale.run_dir import claim


def save(root, it, run_id="run-a", start_model="/models/base", learner_bytes=b"weights" * 100, saved_at=None):
    """A checkpoint as the trainer writes one: learner files first, then the manifest and controller.json."""
    path = C.checkpoint_path(root, it)
    (path / "learner" / "global_step1").mkdir(parents=True, exist_ok=True)
    (path / "learner" / "global_step1" / "model_states.pt").write_bytes(learner_bytes)
    (path / "learner" / "latest").write_text("global_step1")
    state = C.new_state(it, it, {"epoch": 0, "position": it}, start_model, path, run_id)
    if saved_at is not None:
        state.saved_at = saved_at
    C.write_state(path, state, run_dir=root.parent)
    return path


def cfg_for(run_dir, *overrides):
    return load_config(None, [f"tracking.run_dir={run_dir}", *overrides])


# ------------------------------------------------------------------------------------------------ ownership
def test_fresh_start_in_a_directory_holding_a_run_is_refused(tmp_path):
    run = tmp_path / "run"
    for it in (2, 4, 6):
        save(run / "checkpoints", it)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i}) + "\n" for i in range(1, 7)))
    with pytest.raises(ConfigError) as e:
        claim(cfg_for(run, "checkpoint.resume=never"))
    message = str(e.value)
    assert "tracking.run_dir" in message and "checkpoint.overwrite=true" in message
    assert "iter_000006" in message and "6 rows" in message
    assert len(C.complete_checkpoints(run / "checkpoints")) == 3  # nothing touched
    claim(cfg_for(run))  # resume=auto continues it: no refusal
    claim(cfg_for(tmp_path / "new", "checkpoint.resume=never"))  # an empty directory is free


def test_overwrite_removes_the_old_run_first_and_keeps_reusable_inputs(tmp_path):
    run = tmp_path / "run"
    save(run / "checkpoints", 6)
    (run / "metrics.jsonl").write_text('{"iteration": 6}\n')
    (run / "samples").mkdir()
    (run / "sft_model").mkdir()
    dry = []
    claim(cfg_for(run, "checkpoint.resume=never", "checkpoint.overwrite=true"), dry_run=True, say=dry.append)
    assert (run / "metrics.jsonl").is_file() and "would" in dry[0]  # --dry-run deletes nothing
    claim(cfg_for(run, "checkpoint.resume=never", "checkpoint.overwrite=true"), say=lambda _: None)
    assert not (run / "metrics.jsonl").exists() and not (run / "samples").exists()
    assert C.complete_checkpoints(run / "checkpoints") == []
    assert (run / "sft_model").is_dir()


def test_overwrite_needs_resume_never():
    with pytest.raises(ConfigError, match="checkpoint.resume=never"):
        load_config(None, ["checkpoint.overwrite=true"])


def test_keep_last_prunes_only_this_runs_checkpoints(tmp_path):
    root = tmp_path / "checkpoints"
    for it in (5, 6):  # another run's, higher-numbered
        save(root, it, run_id="old", saved_at=1.0)
    for it in (1, 2, 3):
        save(root, it, run_id="new")
    C.prune(root, keep_last=2, run_id="new")
    assert [p.name for p in C.complete_checkpoints(root)] == ["iter_000002", "iter_000003", "iter_000005",
                                                              "iter_000006"]


def test_resume_picks_the_newest_save_not_the_highest_iteration(tmp_path):
    # resumed from iteration 2 of a run that had reached 6: its next saves are the ones to continue from
    root = tmp_path / "checkpoints"
    save(root, 6, saved_at=100.0)
    save(root, 3, saved_at=200.0)
    assert C.find_resume_state("auto", root).iteration == 3
    C.prune(root, keep_last=1, run_id="run-a")
    assert [p.name for p in C.complete_checkpoints(root)] == ["iter_000003"]


@pytest.mark.parametrize("how", ["copy", "move"])
def test_a_copied_or_moved_run_directory_resumes_from_its_own_checkpoints(tmp_path, how):
    run = tmp_path / "run"
    (run / "sft_model").mkdir(parents=True)
    save(run / "checkpoints", 2, start_model=str(run / "sft_model"))
    stored = json.loads((run / "checkpoints" / "iter_000002" / C.STATE_FILE).read_text())
    assert not any(str(tmp_path) in str(v) for v in stored.values())  # nothing points outside the directory
    other = tmp_path / "elsewhere"
    (shutil.copytree if how == "copy" else shutil.move)(run, other)
    state = C.find_resume_state("auto", other / "checkpoints")
    assert state.path == str(other / "checkpoints" / "iter_000002")
    assert state.learner_dir == str(other / "checkpoints" / "iter_000002" / "learner")
    assert state.start_model == str(other / "sft_model")


def test_a_start_model_outside_the_run_directory_stays_as_given(tmp_path):
    path = save(tmp_path / "run" / "checkpoints", 1, start_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert C.read_state(path).start_model == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_checkpoints_of_an_older_rayscale_still_resume(tmp_path):
    path = tmp_path / "iter_000004"
    (path / "learner").mkdir(parents=True)
    (path / C.STATE_FILE).write_text(json.dumps({
        "iteration": 4, "policy_version": 4, "cursor": {"epoch": 0, "position": 4}, "start_model": "/old/m",
        "path": "/old/place/iter_000004", "learner_dir": "/old/place/iter_000004/learner"}))
    state = C.find_resume_state("auto", tmp_path)
    assert state.iteration == 4 and state.learner_dir == str(path / "learner")


# ------------------------------------------------------------------------------------------------ verification
def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    root = tmp_path / "checkpoints"
    save(root, 1)
    newest = save(root, 2)
    model = newest / "learner" / "global_step1" / "model_states.pt"
    model.write_bytes(model.read_bytes()[:100])
    said = []
    state = C.find_resume_state("auto", root, say=said.append)
    assert state.iteration == 1
    assert len(said) == 1 and "iter_000002" in said[0] and "model_states.pt" in said[0] and "truncated" in said[0]


def test_a_changed_file_of_the_same_size_fails_its_checksum(tmp_path):
    path = save(tmp_path, 1)
    model = path / "learner" / "global_step1" / "model_states.pt"
    model.write_bytes(b"X" * model.stat().st_size)
    assert "checksum" in C.problem(path)


@pytest.mark.parametrize("damage", ["truncated_state", "missing_file"])
def test_no_usable_checkpoint_names_them_and_the_way_out(tmp_path, damage):
    root = tmp_path / "checkpoints"
    path = save(root, 3)
    if damage == "truncated_state":
        state = path / C.STATE_FILE
        state.write_text(state.read_text()[:40])
    else:
        (path / "learner" / "latest").unlink()
    with pytest.raises(C.CheckpointError) as e:
        C.find_resume_state("auto", root, say=lambda _: None)
    assert "iter_000003" in str(e.value) and "checkpoint.resume=PATH" in str(e.value)
    assert isinstance(e.value, ConfigError)  # exit status 2, no traceback


def test_an_explicit_bad_checkpoint_is_refused_naming_the_usable_ones(tmp_path):
    root = tmp_path / "checkpoints"
    good = save(root, 1)
    bad = save(root, 2)
    (bad / "learner" / "latest").write_text("global_step9")  # a different size than the manifest says
    with pytest.raises(C.CheckpointError) as e:
        C.find_resume_state(str(bad), root)
    assert "latest" in str(e.value) and str(good) in str(e.value)
    assert C.find_resume_state(str(good), root).iteration == 1
