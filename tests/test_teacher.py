"""Model teachers end to end: prompts out, replies parsed, LEMA's filter, rejections counted; and the Ray actor."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from rayscale.config import TeacherConfig
from rayscale.data import Problem
from rayscale.teacher.records import (
    BAD_STEP_INDEX,
    NO_ERROR_FOUND,
    REQUEST_FAILED,
    UNPARSEABLE,
    WRONG_FINAL_ANSWER,
    CorrectionRequest,
)
from rayscale.teacher.teacher import make_teacher
from tests.chat_server import FakeChatServer

KEY_ENV = "RAYSCALE_TEST_TEACHER_KEY"


def _problem(i: int) -> Problem:
    # 5+7*3-i, gold answer 26-i
    return Problem(f"p{i}", f"5+7*3-{i}=?", str(26 - i), None, ("7*3=21", "5+21=26", f"26-{i}={26 - i}"), "synthetic")


def _student(i: int) -> str:
    return f"7*3=21\n5+21=27\n27-{i}={27 - i}\n\\boxed{{{27 - i}}}"


def _item(i: int) -> CorrectionRequest:
    return CorrectionRequest(_problem(i), _student(i), f"q{i}")


def _good(i: int) -> str:
    return f"<IncorrectStep>2</IncorrectStep><Explanation>5+21 is 26, not 27</Explanation>" \
           f"<Correction>\n5+21=26\n26-{i}={26 - i}\n\\boxed{{{26 - i}}}\n</Correction>"


# problem number -> the teacher's reply (kind of reply: what the filter must decide)
REPLIES = {
    1: _good(1),
    2: "**Incorrect step:** Step 2\n**Explanation:** 5+21 is 26\n**Corrected solution:**\n7*3=21\n5+21=26\n26-2=24\n"
       "\\boxed{24}\nLet me know if you need more help!",  # whole solution repeated + chatter: both trimmed
    3: _good(3).replace("\\boxed{23}", "\\boxed{99}"),  # wrong final answer
    4: _good(4).replace("<IncorrectStep>2", "<IncorrectStep>9"),  # no step 9
    5: "The student made an arithmetic slip somewhere.",
    6: "<IncorrectStep>none</IncorrectStep>",
    7: _good(7),  # the server fails this one every time
    8: _good(8)[: len(_good(8)) - 30],  # cut off before the answer line
}


def _reply(messages: list[dict]) -> str:
    user = messages[-1]["content"]
    i = int(re.search(r"5\+7\*3-(\d+)=\?", user).group(1))
    if "<Verdicts>" in user:
        return "<Verdicts>\nStep 1: correct\nStep 2: incorrect\n</Verdicts>\n<FirstWrong>2</FirstWrong>"
    if "<Generalized>" in user:
        return f"<Step1>7*3=21<Key>multiply first</Key></Step1><Step2>5+21=26</Step2><Step3>26-{i}={26 - i}</Step3>" \
               f"<Generalized>products first</Generalized><Answer>\\boxed{{{26 - i}}}</Answer>"
    return REPLIES[i]


def _faults(key: str, attempt: int) -> str:
    return "500" if "5+7*3-7=?" in key else "ok"


@pytest.fixture
def api_teacher(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-teacher-test")
    with FakeChatServer(reply=_reply, faults=_faults) as server:
        cfg = TeacherConfig(backend="openai", openai={
            "base_url": server.base_url, "api_key_env": KEY_ENV, "max_retries": 1, "backoff_initial_s": 0.01,
            "backoff_max_s": 0.02, "timeout_s": 5})
        yield make_teacher(cfg), server


def test_api_teacher_corrections_filtered_and_counted(api_teacher):
    teacher, server = api_teacher
    out = teacher.correct([_item(i) for i in REPLIES])
    by_id = {c.prompt_id: c for c in out}
    assert [c.prompt_id for c in out] == [f"q{i}" for i in REPLIES]
    for i in (1, 2):
        c = by_id[f"q{i}"]
        assert c.accepted and c.wrong_step == 1 and c.kept_prefix_steps == ["7*3=21"]
        assert c.corrected_steps == ["5+21=26", f"26-{i}={26 - i}", f"\\boxed{{{26 - i}}}"]
        assert c.corrected_solution == f"7*3=21\n5+21=26\n26-{i}={26 - i}\n\\boxed{{{26 - i}}}"
    assert by_id["q1"].explanation == "5+21 is 26, not 27"
    reasons = {c.prompt_id: c.reject_reason for c in out if not c.accepted}
    assert reasons == {"q3": WRONG_FINAL_ANSWER, "q4": BAD_STEP_INDEX, "q5": UNPARSEABLE, "q6": NO_ERROR_FOUND,
                       "q7": REQUEST_FAILED, "q8": "no_final_answer"}
    assert by_id["q7"].meta == {"backend_error": "http_500"}
    stats = teacher.stats()
    assert stats["backend"] == "openai" and stats["requests"] == 8 and stats["retries"] == 1
    assert stats["request_failures"] == {"http_500": 1}
    assert stats["tasks"]["correct"]["accepted"] == 2
    assert stats["tasks"]["correct"]["rejected"] == {
        WRONG_FINAL_ANSWER: 1, BAD_STEP_INDEX: 1, UNPARSEABLE: 1, NO_ERROR_FOUND: 1, REQUEST_FAILED: 1,
        "no_final_answer": 1}
    assert set(stats["request_latency_s"]) == {"mean", "p50", "p95", "max"}
    assert server.authorization == {"Bearer sk-teacher-test"}


def test_api_teacher_localise_and_templates(api_teacher):
    teacher, _ = api_teacher
    (loc,) = teacher.localise([_item(1)])
    assert (loc.first_wrong, loc.step_verdicts, loc.ok) == (1, [True, False, False, False], True)
    (failed,) = teacher.localise([_item(7)])
    assert failed.reject_reason == REQUEST_FAILED
    tpl_ok, tpl_failed = teacher.thought_templates([_problem(1), _problem(7).to_dict()])
    assert tpl_ok.accepted and tpl_ok.steps == ["7*3=21", "5+21=26", "26-1=25"] and tpl_ok.answer == "25"
    assert tpl_ok.key_notes == ["multiply first", None, None]
    assert tpl_failed.reject_reason == REQUEST_FAILED


def test_local_backend_needs_a_model_path():
    from rayscale.errors import ConfigError

    with pytest.raises(ConfigError, match="teacher.local.model_path"):
        make_teacher(TeacherConfig(backend="local"))


TINY_TEMPLATE = "=== user ===\n{{question}}\n{{student_steps}}\n"


def _tiny_local_teacher(tmp_path, model_dir, device="cpu"):
    for task in ("correct", "localise"):
        (tmp_path / f"{task}.md").write_text(TINY_TEMPLATE)
    (tmp_path / "thought_template.md").write_text("=== user ===\n{{question}}\n")
    cfg = TeacherConfig(backend="local", prompts_dir=str(tmp_path),
                        local={"max_new_tokens": 6, "batch_size": 2, "device": device})
    return make_teacher(cfg, model_dir)


def test_local_hf_teacher_never_raises(tmp_path, tiny_model_dir):
    # An untrained tiny model answers noise: every item must come back rejected with a reason, none raised.
    teacher = _tiny_local_teacher(tmp_path, tiny_model_dir)
    out = teacher.correct([_item(i) for i in (1, 2, 3)])
    assert [c.prompt_id for c in out] == ["q1", "q2", "q3"]
    assert all(not c.accepted and c.reject_reason in (REQUEST_FAILED, UNPARSEABLE) for c in out)
    assert len(teacher.localise([_item(1)])) == 1 and len(teacher.thought_templates([_problem(1)])) == 1
    stats = teacher.stats()
    assert stats["backend"] == "local" and stats["requests"] == 5
    assert sum(stats["tasks"]["correct"]["rejected"].values()) == 3


@pytest.mark.gpu
def test_local_hf_teacher_on_gpu(tmp_path, tiny_model_dir):
    # A failed generate also comes back as one (rejected) result per item, so counting results proves nothing:
    # count the requests the model answered on the GPU. With 6 new tokens an untrained model's reply may be cut
    # off (`truncated`: it still ran); any other failure (generate_error_*, an OOM) did not reach an answer.
    teacher = _tiny_local_teacher(tmp_path, tiny_model_dir, device="cuda")
    assert teacher.backend.model.device.type == "cuda"
    out = teacher.correct([_item(1), _item(2)])
    stats = teacher.stats()
    failures = stats["request_failures"]
    answered = stats["requests"] - sum(failures.values()) + failures.get("truncated", 0)
    assert stats["requests"] == 2 and answered == 2, failures
    assert [c.prompt_id for c in out] == ["q1", "q2"]
    # an answered reply is judged on its text (unparseable noise), a truncated one is a failed request
    assert sum(c.reject_reason == UNPARSEABLE for c in out) == 2 - failures.get("truncated", 0)


@pytest.mark.vllm
@pytest.mark.ray
def test_local_vllm_teacher_on_cpu_answers_every_request_it_can(smollm2_dir):
    # A real model with a real context: every request must reach the model and come back (a reply cut at
    # max_new_tokens is the only failure allowed), except one whose prompt cannot fit, which is answered
    # prompt_too_long on its own, without failing the others.
    import ray

    from rayscale.actors.teacher import TeacherActor

    cfg = TeacherConfig(backend="local", local={"backend": "vllm", "model_path": smollm2_dir, "max_new_tokens": 48,
                                                "vllm": {"kv_cache_gb": 1, "max_model_len": 1024,
                                                         "enforce_eager": True}})  # no 2-min compile warm-up
    too_long = replace(_item(3), student_solution="7*3=21\n" * 400)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        teacher = TeacherActor.remote(cfg)
        out = ray.get(teacher.correct.remote([_item(1), _item(2), too_long]))
        stats = ray.get(teacher.stats.remote())
    finally:
        ray.shutdown()
    assert [c.prompt_id for c in out] == ["q1", "q2", "q3"]
    assert stats["requests"] == 3
    assert out[2].reject_reason == REQUEST_FAILED and stats["request_failures"].get("prompt_too_long") == 1
    answered = 3 - sum(stats["request_failures"].values())
    assert answered + stats["request_failures"].get("truncated", 0) == 2  # q1 and q2 both reached the model
    assert all(c.accepted or c.reject_reason for c in out)


@pytest.mark.ray
def test_teacher_actor_oracle_and_api(monkeypatch):
    import ray

    from rayscale.actors.teacher import TeacherActor

    monkeypatch.setenv(KEY_ENV, "sk-actor-test")  # before ray.init: the workers inherit this environment
    # address="local": always a private cluster, never one another process on this machine started
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        oracle = TeacherActor.remote(TeacherConfig().model_dump())
        corrections = ray.get(oracle.correct.remote([_item(1), CorrectionRequest(_problem(2), None, "bad")]))
        assert corrections[0].accepted and corrections[0].corrected_steps == ["5+21=26", "26-1=25", "\\boxed{25}"]
        assert (corrections[1].prompt_id, corrections[1].reject_reason) == ("bad", "bad_item")
        assert ray.get(oracle.thought_templates.remote([_problem(1)]))[0].accepted
        correct_stats = ray.get(oracle.stats.remote())["tasks"]["correct"]
        assert isinstance(correct_stats.pop("seconds"), float)  # how long: benchmarks' business, not a test's
        assert correct_stats == {"items": 2, "accepted": 1, "rejected": {"bad_item": 1}}
        with FakeChatServer(reply=_reply) as server:
            cfg = TeacherConfig(backend="openai", openai={"base_url": server.base_url, "api_key_env": KEY_ENV})
            api = TeacherActor.remote(cfg)
            (c,) = ray.get(api.correct.remote([_item(1)]))
            assert c.accepted and server.authorization == {"Bearer sk-actor-test"}
            ray.kill(api)
        ray.kill(oracle)
    finally:
        ray.shutdown()
