"""The `openai` teacher against a real `vllm serve` (SmolLM2-135M-Instruct on CPU), on real GSM8K problems.

A 135M model writes poor templates, verdicts and corrections. What these tests hold the teacher to is the
contract, not the quality: every reply, well-formed or garbage, ends as exactly one record in its item's slot,
accepted or rejected with a known reason and counted; every request is counted once; the server really answered;
and whatever is accepted passes the same filter the oracle's corrections pass (LEMA's: k is a real step of the
student's solution and the corrected solution's final answer verifies against gold).

The server tests are marked `vllm` (`make test-vllm`); the parser regression the real replies exposed is not, so it
also runs in the main environment.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import httpx
import pytest

from rayscale.config import TeacherConfig
from rayscale.data import Problem, load_problems
from rayscale.prompts import format_solution
from rayscale.teacher.acceptance import valid_step_index
from rayscale.teacher.parsers import parse_correction, parse_localisation, parse_step_number
from rayscale.teacher.records import (
    BAD_STEP_INDEX,
    EMPTY_CORRECTION,
    NO_ERROR_FOUND,
    NO_FINAL_ANSWER,
    REJECT_REASONS,
    REQUEST_FAILED,
    UNPARSEABLE,
    WRONG_FINAL_ANSWER,
)
from rayscale.teacher.teacher import make_teacher
from rayscale.text import split_steps
from rayscale.verify import extract_answer, is_equivalent, verify_response

KEY_ENV = "RAYSCALE_TEST_VLLM_TEACHER_KEY"
N_TRAIN, N_TEST = 3, 2  # corrupted gold solutions of train problems, real wrong 6B-model solutions of test ones
MAX_TOKENS = 256
# The client's failure reasons a working server may still cause: a reply cut at max_tokens (a 135M model rambles)
# and, on an overloaded 2-core machine, a slow answer. Anything else (connection, http_4xx/5xx, malformed_json,
# bad_response) means the client and the server do not fit together.
TOLERATED_FAILURES = {"truncated", "timeout"}
_CALC = re.compile(r"<<([^<>=]+)=([^<>]+)>>")


# ------------------------------------------------------------------------------------------------ data
def _corrupted_gold(problem: Problem) -> str | None:
    """The gold solution with its last calculation off by one, carried into the answer line (a wrong student)."""
    *head, last = problem.gold_steps
    m = _CALC.search(last)
    if not m or m.group(2).strip() != problem.gold_answer:
        return None
    wrong = str(int(problem.gold_answer) + 1) if problem.gold_answer.isdigit() else None
    if wrong is None:
        return None
    value = m.group(2)
    step = last[: m.start()] + f"<<{m.group(1)}={wrong}>>" + last[m.end():].replace(value, wrong, 1)
    return format_solution([*head, step], wrong)


@pytest.fixture(scope="module")
def items(shared_data) -> list[dict]:
    """4-6 teacher items: real GSM8K problems, each with a wrong student solution, one step per line."""
    out = []
    for p in load_problems("gsm8k", path=str(shared_data / "gsm8k_train.jsonl"), split="train", limit=200):
        if 2 <= len(p.gold_steps) <= 4 and (student := _corrupted_gold(p)):
            out.append({"problem": p, "student_solution": student, "prompt_id": f"{p.id}#corrupted"})
        if len(out) == N_TRAIN:
            break
    test = load_problems("gsm8k", split="test", limit=200)
    rows = [json.loads(line) for _, line in zip(range(200), open(shared_data / "gsm8k_example_model_solutions.jsonl"))]
    for p, row in zip(test, rows):
        sol = row["6b_finetuning"]
        lines = split_steps(sol["solution"])
        if sol["is_correct"] or not 2 <= len(lines) <= 4 or not lines[-1].startswith("A:"):
            continue
        answer = lines[-1].removeprefix("A:").strip()
        if verify_response(p.gold_answer, answer).correct:  # labelled wrong but states the gold answer
            continue
        out.append({"problem": p, "student_solution": format_solution(lines[:-1], answer),
                    "prompt_id": f"{p.id}#6b"})
        if len(out) == N_TRAIN + N_TEST:
            break
    assert len(out) == N_TRAIN + N_TEST
    for it in out:  # every student is wrong: there is something to correct
        assert not verify_response(it["problem"].gold_answer, it["student_solution"]).correct
    return out


@pytest.fixture
def teacher(vllm_teacher_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-dummy-vllm-teacher")  # the server has no --api-key: any key is accepted
    cfg = TeacherConfig(backend="openai", openai={
        "base_url": vllm_teacher_server.base_url, "model": vllm_teacher_server.model, "api_key_env": KEY_ENV,
        "max_tokens": MAX_TOKENS, "temperature": 0.0, "timeout_s": 240, "max_retries": 1,
        "backoff_initial_s": 0.1, "backoff_max_s": 1.0, "concurrency": 8})
    return make_teacher(cfg)


# ------------------------------------------------------------------------------------------------ checks
def _check_bookkeeping(teacher, task: str, records: list, ids: list[str]) -> dict:
    """One record per item in order; reasons known and counted; each request counted once; the server answered."""
    assert [r.prompt_id for r in records] == ids
    reasons = [r.reject_reason for r in records]
    assert all(reason is None or reason in REJECT_REASONS for reason in reasons), reasons
    stats = teacher.stats()
    assert stats["backend"] == "openai"
    assert stats["requests"] == len(ids), stats  # one request per item, no more, no fewer
    failures = stats["request_failures"]
    assert set(failures) <= TOLERATED_FAILURES, f"the client and the server disagree: {failures}"
    assert stats["requests"] - sum(failures.values()) > 0, f"the server never answered usably: {stats}"
    # every failed request is exactly one request_failed record, and only those are
    assert reasons.count(REQUEST_FAILED) == sum(failures.values()), (reasons, failures)
    t = stats["tasks"][task]
    assert t["items"] == len(ids)
    assert t["accepted"] == reasons.count(None)
    assert t["rejected"] == dict(Counter(r for r in reasons if r is not None))
    assert t["accepted"] + sum(t["rejected"].values()) == len(ids)
    assert set(stats["request_latency_s"]) == {"mean", "p50", "p95", "max"}
    return stats


def _summary(records) -> str:
    return ", ".join(f"{r.prompt_id}: {r.reject_reason or 'accepted'}" for r in records)


# ------------------------------------------------------------------------------------------------ tests
def test_first_in_the_question_is_not_the_answer():
    """Found against the real server (no vLLM needed to check it): SmolLM2 echoed the format's placeholder,
    `<FirstWrong>number of the first incorrect step, or none</FirstWrong>`, and the parser read the "first" of
    "first incorrect step" as "step 1", so that a capable model's "The first incorrect step is step 3" was step 1
    too."""
    assert parse_step_number("The first incorrect step is step 3") == 3
    assert parse_step_number("the first error is in the second step") == 2
    assert parse_step_number("number of the first incorrect step, or none") == "none"
    assert parse_step_number("number of the first incorrect step") is None
    assert parse_step_number("the first step") == 1 and parse_step_number("First wrong step: Step 2") == 2
    echoed = "Step 1: correct\nStep 2: incorrect\n<FirstWrong>number of the first incorrect step, or none</FirstWrong>"
    assert parse_localisation(echoed, 3).first_wrong == 1  # the verdicts decide, not the echoed "first"
    assert parse_correction("<IncorrectStep>number of the first incorrect step</IncorrectStep>") is None


@pytest.mark.vllm
def test_server_lists_the_teacher_model(vllm_teacher_server):
    assert vllm_teacher_server.base_url.startswith("http://127.0.0.1:")
    response = httpx.get(f"{vllm_teacher_server.base_url}/models", timeout=10)
    assert response.status_code == 200
    assert vllm_teacher_server.model in [m["id"] for m in response.json()["data"]]


@pytest.mark.vllm
def test_thought_templates_from_vllm(teacher, items):
    problems = [it["problem"] for it in items]
    out = teacher.thought_templates(problems)
    _check_bookkeeping(teacher, "thought_template", out, [p.id for p in problems])
    for tpl, p in zip(out, problems):
        if tpl.accepted:
            assert tpl.reject_reason is None and tpl.steps and len(tpl.key_notes) == len(tpl.steps)
            assert tpl.answer is not None and is_equivalent(p.gold_answer, tpl.answer).correct
            assert extract_answer(tpl.to_text()) == tpl.answer  # the SFT target states the accepted answer
        elif tpl.reject_reason in (REQUEST_FAILED, UNPARSEABLE):
            assert not tpl.steps and tpl.answer is None
        else:  # read, but its answer is missing or does not verify
            assert tpl.reject_reason in (NO_FINAL_ANSWER, WRONG_FINAL_ANSWER) and tpl.steps
            assert tpl.answer is None or not is_equivalent(p.gold_answer, tpl.answer).correct
    print("thought_template:", _summary(out))


@pytest.mark.vllm
def test_localise_from_vllm(teacher, items):
    out = teacher.localise(items)
    _check_bookkeeping(teacher, "localise", out, [it["prompt_id"] for it in items])
    for loc, it in zip(out, items):
        lines = split_steps(it["student_solution"])
        if loc.ok:
            assert len(loc.step_verdicts) == len(lines)
            if loc.first_wrong is None:
                assert all(loc.step_verdicts)
            else:
                k = loc.first_wrong
                assert valid_step_index(k, lines)
                assert all(loc.step_verdicts[:k]) and (k == len(lines) or loc.step_verdicts[k] is False)
        else:
            assert loc.reject_reason in (REQUEST_FAILED, UNPARSEABLE, BAD_STEP_INDEX)
            assert loc.step_verdicts == [] and loc.first_wrong is None
    print("localise:", _summary(out))


@pytest.mark.vllm
def test_corrections_from_vllm(teacher, items):
    out = teacher.correct(items)
    stats = _check_bookkeeping(teacher, "correct", out, [it["prompt_id"] for it in items])
    for c, it in zip(out, items):
        lines, gold = split_steps(it["student_solution"]), it["problem"].gold_answer
        if c.accepted:
            # LEMA's filter, the one every oracle correction passes: k is a real step of the student's solution...
            assert c.reject_reason is None and valid_step_index(c.wrong_step, lines)
            assert c.kept_prefix_steps == lines[: c.wrong_step]
            assert c.corrected_steps and c.corrected_solution == "\n".join(c.kept_prefix_steps + c.corrected_steps)
            # ...and the chosen response's final answer, read off its last line, verifies against gold
            assert c.final_answer == extract_answer(c.corrected_steps[-1])
            assert is_equivalent(gold, c.final_answer).correct
            assert verify_response(gold, c.corrected_solution).correct  # as the verifier pool would grade it
        elif c.reject_reason in (REQUEST_FAILED, UNPARSEABLE, NO_ERROR_FOUND, BAD_STEP_INDEX):
            assert c.corrected_solution == "" and c.corrected_steps == []
            if c.reject_reason == REQUEST_FAILED:
                assert c.meta["backend_error"] in stats["request_failures"]
            if c.reject_reason == BAD_STEP_INDEX:
                assert not valid_step_index(c.wrong_step, lines)
        else:  # assembled, then failed the filter: it must really fail it
            assert c.reject_reason in (EMPTY_CORRECTION, NO_FINAL_ANSWER, WRONG_FINAL_ANSWER), c.reject_reason
            assert valid_step_index(c.wrong_step, lines) and c.kept_prefix_steps == lines[: c.wrong_step]
            if c.reject_reason == WRONG_FINAL_ANSWER:
                assert c.final_answer is not None and not is_equivalent(gold, c.final_answer).correct
            elif c.reject_reason == NO_FINAL_ANSWER:
                assert c.final_answer is None and c.corrected_steps
            else:
                assert c.corrected_steps == []
    print("correct:", _summary(out), "| stats:", json.dumps(stats["request_failures"]),
          json.dumps(stats["request_latency_s"]))
