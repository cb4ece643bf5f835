"""Failures that say what happened (issue 21), without Ray: exit statuses, the second Ctrl-C, teacher failures
counted and stopping a run, how an actor died, full disks and unwritable paths, settings that cannot learn."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from rayscale import failures
from rayscale.config_loading import load_config
from rayscale.errors import ConfigError
from rayscale.teacher.records import Correction
from rayscale.tracking import Tracker

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ exit statuses
def test_exit_statuses():
    assert (failures.FINISHED, failures.BAD_INPUT, failures.FAILED) == (0, 2, 3)
    assert failures.STOPPED == {"SIGINT": 130, "SIGTERM": 143}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_stops_at_once_with_the_signals_status(sig):
    script = textwrap.dedent(f"""
        import os, signal, time
        from rayscale.stop import StopRequest
        stop = StopRequest.install()
        os.kill(os.getpid(), {int(sig)})
        time.sleep(0.2)
        print("first:", stop.requested, flush=True)
        os.kill(os.getpid(), {int(sig)})
        time.sleep(60)  # a stage that would run on: the second signal must not wait for it
        print("not stopped", flush=True)
    """)
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 128 + sig, (r.returncode, r.stdout, r.stderr)
    assert f"first: {signal.Signals(sig).name}" in r.stdout and "not stopped" not in r.stdout
    assert "Traceback" not in r.stderr and time.monotonic() - started < 30


def test_a_failure_the_run_cannot_survive_is_exit_3_without_a_traceback(monkeypatch, capsys):
    from rayscale import cli, controller

    def fail(cfg, dry_run=False):
        raise failures.RunFailure("teacher (openai)", "9 of 10 requests got no answer (http_500 9)", "Check it")

    monkeypatch.setattr(controller, "main", fail)
    assert cli.main(["train"]) == 3
    err = capsys.readouterr().err
    assert "teacher (openai) failed: 9 of 10 requests" in err and "http_500" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ teacher
def test_teacher_failures_are_counted_by_reason_and_shown():
    from rayscale.algos import strategies as S
    from rayscale.algos.pairs import Graded
    from rayscale.data import Problem
    from rayscale.types import Sample

    problems = [Problem(f"p{i}", f"{i}+1", str(i + 1), gold_solution=f"{i}+1={i + 1}") for i in range(4)]
    group = [(p, [Graded(Sample(p.id, p.question, "", "x=0\nThe answer is 0."), False, "0")]) for p in problems]
    reasons = ["http_429", "http_429", "timeout", None]

    def correct(wrong):
        return [Correction.rejected(p.id, "request_failed", backend_error=r) if r else
                Correction.rejected(p.id, "teacher_unavailable") for (p, _), r in zip(wrong, reasons)]

    ctx = S.StrategyContext(algo=load_config().algo, generate=None, verify=None, correct=correct,
                            weak_answers=None, seed=None)
    stats = {}
    assert S.build_pairs("correction", ctx, group, random.Random(0), 1, stats) == []
    assert stats["teacher/failed/http_429"] == 2 and stats["teacher/failed/timeout"] == 1
    assert stats["teacher/failed/teacher_unavailable"] == 1
    line = Tracker.console_line({"iteration": 3, "pairs": 0, **stats})
    assert "teacher failed" in line and "http_429 2" in line and "timeout 1" in line


def test_max_failed_fraction_stops_the_run_with_the_reasons():
    from rayscale.failures import check_teacher_failures

    teacher = load_config().teacher
    assert teacher.max_failed_fraction == 0.5
    check_teacher_failures(1, {"correction/requests": 10, "teacher/failed/http_500": 5}, teacher)  # half: runs on
    with pytest.raises(failures.RunFailure) as e:
        check_teacher_failures(2, {"correction/requests": 10, "teacher/failed/http_500": 4,
                                   "teacher/failed/timeout": 2}, teacher)
    assert "teacher" in str(e.value) and "http_500 4, timeout 2" in str(e.value) and "iteration 2" in str(e.value)
    check_teacher_failures(3, {"correction/requests": 0}, teacher)  # nothing asked: nothing to judge


def test_the_openai_probe_names_the_url_and_the_error():
    from rayscale.teacher.openai_client import probe_endpoint
    from tests.chat_server import FakeChatServer
    from tests.servers import free_port

    closed = load_config(None, [f"teacher.openai.base_url=http://127.0.0.1:{free_port()}/v1"]).teacher.openai
    with pytest.raises(ConfigError) as e:
        probe_endpoint(closed)
    assert closed.base_url in str(e.value) and "ConnectError" in str(e.value)
    with FakeChatServer() as server:  # answers (404 on /models is an answer): the run may start
        probe_endpoint(load_config(None, [f"teacher.openai.base_url={server.base_url}"]).teacher.openai)


# ------------------------------------------------------------------------------------------------ actor deaths
def test_every_way_an_actor_dies_is_a_death_with_its_cause():
    import ray.exceptions as rex

    oom = rex.OutOfMemoryError("Task was killed due to the node running low on memory.")
    assert "out-of-memory" in failures.death_cause(oom)
    assert isinstance(oom, failures.actor_death_errors())  # rollout workers are replaced on it, as on ray.kill
    assert "node" in failures.death_cause(rex.NodeDiedError("node gone"))
    assert failures.death_cause(rex.RayActorError()) is not None
    assert failures.death_cause(ValueError("a bug in the rank")) is None  # raised, not died: no restart


def test_a_learner_out_of_memory_failure_names_role_cause_and_fix():
    from rayscale.actors.learner import LearnerGroupError

    err = LearnerGroupError("learner rank 1 died in train_dpo", cause=failures.death_cause(
        __import__("ray.exceptions").exceptions.OutOfMemoryError("low memory")))
    message = str(failures.learner_failure(err, 2))
    assert message.startswith("learner failed:") and "out-of-memory" in message and "2 restart(s)" in message
    for fix in ("learner.micro_batch_size", "learner.gradient_checkpointing", "learner.num_ranks"):
        assert fix in message


# ------------------------------------------------------------------------------------------------ disks
@contextmanager
def mounted(tmp_path, *options):
    """A tmpfs (or a read-only bind mount) at tmp_path/mnt; skipped where mounting is not allowed (not root)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", *options, str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount here ({r.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_names_the_path_and_the_cause(tmp_path):
    import torch

    from rayscale import checkpointing as C
    from rayscale.writing import os_error_message, write_failure

    with mounted(tmp_path, "-t", "tmpfs", "-o", "size=64k", "tmpfs") as disk:
        target = disk / "ckpt" / "iter_000001"
        target.mkdir(parents=True)
        with pytest.raises(Exception) as raised:  # what a learner rank's checkpoint write raises on a full disk
            torch.save({"w": torch.zeros(100_000)}, target / "model_states.pt")
        failure = write_failure("checkpoint of iteration 1", target, raised.value)
        assert failure is not None and "no space left" in str(failure) and str(target) in str(failure)
        assert "checkpoint.dir" in str(failure)
        with pytest.raises(OSError) as e:  # the driver's own write (manifest, controller.json, metrics)
            (disk / "fill").write_bytes(b"x" * 200_000)
        message, status = os_error_message(e.value)
        assert status == 3 and "no space left" in message
        assert C.complete_checkpoints(disk / "ckpt") == []  # a half-written checkpoint is never complete


def test_an_unwritable_run_directory_is_bad_input(tmp_path):
    from rayscale.writing import make_run_dir

    source = tmp_path / "src"
    source.mkdir()
    with mounted(tmp_path, "--bind", "-o", "ro", str(source)) as ro:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        with pytest.raises(ConfigError) as e:
            make_run_dir(ro / "run")
        assert f"tracking.run_dir={ro / 'run'}" in str(e.value) and "Read-only file system" in str(e.value)
        assert os_error_status(errno.EROFS) == 2


def os_error_status(code: int) -> int:
    from rayscale.writing import os_error_message

    return os_error_message(OSError(code, os.strerror(code), "/x"))[1]


def test_dry_run_writes_nothing(tmp_path, capsys):
    from rayscale.cli import main

    run_dir = tmp_path / "run"
    assert main(["train", f"tracking.run_dir={run_dir}", "--dry-run"]) == 0
    assert not run_dir.exists()
    assert "dry run" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ degenerate
@pytest.mark.parametrize("strategy", ["outcome", "weak_to_strong", "{outcome: 0.5, correction: 0.5}"])
def test_one_sample_per_prompt_with_a_two_sample_strategy_is_refused(strategy):
    with pytest.raises(ConfigError, match="no pair can ever be built"):
        load_config(None, ["algo.samples_per_prompt=1", f"algo.strategy={strategy}"])
    load_config(None, ["algo.samples_per_prompt=1", "algo.strategy=correction"])  # pairs one sample: fine


def test_max_seq_len_shorter_than_every_prompt_is_refused_and_some_warned():
    from rayscale.sanity import check_prompt_lengths

    with pytest.raises(ConfigError, match="learner.max_seq_len=8 is shorter than every prompt"):
        check_prompt_lengths([20, 30, 25], max_seq_len=8, max_new_tokens=64)
    warning = check_prompt_lengths([20, 300, 25], max_seq_len=256, max_new_tokens=64)
    assert "1 of 3 prompts" in warning
    assert check_prompt_lengths([20, 30], max_seq_len=256, max_new_tokens=64) is None


def test_a_real_tokenizer_and_data_refuse_max_seq_len_8(tiny_model_dir):
    from rayscale.models import load_tokenizer
    from rayscale.run_setup import load_splits
    from rayscale.sanity import check_prompts_fit

    cfg = load_config(None, ["learner.max_seq_len=8", "data.synthetic.train_size=50"])
    with pytest.raises(ConfigError, match="learner.max_seq_len=8"):
        check_prompts_fit(cfg, load_tokenizer(tiny_model_dir), load_splits(cfg)[0])
    ok = load_config(None, ["data.synthetic.train_size=50"])
    check_prompts_fit(ok, load_tokenizer(tiny_model_dir), load_splits(ok)[0])


def test_a_local_cluster_asking_far_more_cpus_than_the_machine_has_is_refused(monkeypatch):
    import ray

    from rayscale import cluster
    from rayscale.sanity import check_local_cpus

    assert check_local_cpus(4.5, cores=8, declared=None) is None
    assert "4.5 CPUs on 2 cores" in check_local_cpus(4.5, cores=2, declared=None)
    assert check_local_cpus(67.5, cores=2, declared=68) is None  # cluster.num_cpus: meant
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: pytest.fail("a local Ray was started"))
    with pytest.raises(ConfigError, match="67.5 CPUs and this machine has 2 cores.*cluster.num_cpus"):
        cluster.start_or_join(load_config(None, ["cluster.rollout.num_cpus=64"]))


def test_a_truncated_safetensors_file_fails_the_dry_run(tiny_model_dir, tmp_path, capsys):
    import shutil

    from rayscale.cli import main

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(["train", f"model.path={model}", f"tracking.run_dir={tmp_path / 'run'}", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert weights.name in err and "truncated" in err and "Traceback" not in err
    header = json.loads(weights.read_bytes()[8: 8 + int.from_bytes(weights.read_bytes()[:8], "little")])
    assert header  # the header itself is whole: only the tensors' bytes are missing


def test_learner_restarts_exhausted_end_with_role_cause_and_fix(tiny_model_dir, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import ray.exceptions as rex

    from rayscale import controller
    from rayscale.actors.learner import LearnerGroupError
    from rayscale.run_setup import prepare_run

    cfg = load_config(None, [f"model.path={tiny_model_dir}", f"tracking.run_dir={tmp_path}", "tracking.wandb=false",
                             "checkpoint.max_restarts=1", "data.synthetic.train_size=20"])
    trainer = controller.Trainer(cfg, prepare_run(cfg))
    monkeypatch.setattr(controller.cluster, "start_or_join", lambda cfg, **kw: None)
    monkeypatch.setattr(controller, "place_roles", lambda cfg: {})
    monkeypatch.setattr(controller, "remove_placement_groups", lambda placements: None)
    attempts = []

    def run_from(state):  # every attempt loses a rank to Ray's OOM killer in its first step
        attempts.append(state)
        trainer.tracker = SimpleNamespace(finish=lambda: [])
        raise LearnerGroupError("learner rank 1 died in train_dpo", cause=failures.death_cause(
            rex.OutOfMemoryError("Task was killed due to the node running low on memory.")))

    trainer.run_from, trainer.shutdown = run_from, lambda: None
    with pytest.raises(failures.RunFailure) as e:
        trainer.run()
    assert len(attempts) == 2  # the first try and checkpoint.max_restarts=1 restart
    assert e.value.role == "learner" and "out-of-memory" in e.value.cause
    assert "learner.gradient_checkpointing" in e.value.fix
