"""The OpenAI-compatible client against a real loopback HTTP server with injected faults."""

from __future__ import annotations

import logging
import pickle
import random
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from rayscale.config import OpenAITeacherConfig
from rayscale.teacher.openai_client import OpenAIChatClient, parse_retry_after
from tests.chat_server import FakeChatServer

KEY_ENV = "RAYSCALE_TEST_TEACHER_KEY"
KEY = "sk-test-DISTINCTIVE-9f3c1b7e5a"
MAX_RETRIES = 3


def _cfg(base_url: str, **kw) -> OpenAITeacherConfig:
    defaults = dict(
        # timeout well above a loaded 2-core machine's worst loopback latency, so only "slow" answers time out
        base_url=base_url, api_key_env=KEY_ENV, concurrency=32, timeout_s=3.0, max_retries=MAX_RETRIES,
        backoff_initial_s=0.01, backoff_max_s=0.05,
    )
    return OpenAITeacherConfig(**(defaults | kw))


def _conv(i: int) -> list[dict]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"req-{i}"}]


# fault kind -> (mode served on failing attempts, failing attempts, expected error or None, expected attempts)
KINDS = {
    "429": ("429", 1, None, 2),
    "500": ("500", 2, None, 3),
    "slow": ("slow", 1, None, 2),
    "malformed_json": ("malformed_json", 1, None, 2),
    "truncated_body": ("truncated_body", 1, None, 2),
    "500_forever": ("500", 99, "http_500", MAX_RETRIES + 1),
    "truncated_text": ("truncated_text", 99, "truncated", 1),
    "401": ("401", 99, "http_401", 1),
}


def test_200_requests_with_20_percent_faults_end_exactly_once(monkeypatch, caplog, capsys):
    monkeypatch.setenv(KEY_ENV, KEY)
    caplog.set_level(logging.DEBUG)  # httpx/httpcore debug logs too: the key must not be in any of them
    rng = random.Random(0)
    n = 200
    plan = {i: rng.choice(list(KINDS)) for i in range(n) if rng.random() < 0.2}
    assert 30 <= len(plan) <= 50 and set(plan.values()) == set(KINDS)

    def faults(key: str, attempt: int) -> str:
        kind = plan.get(int(key.split("-")[1]))
        if kind is None:
            return "ok"
        mode, failing, _, _ = KINDS[kind]
        return mode if attempt < failing else "ok"

    with FakeChatServer(faults=faults, retry_after="2", slow_s=8.0) as server:
        client = OpenAIChatClient(_cfg(server.base_url))
        results = client.complete([_conv(i) for i in range(n)])

    assert KEY not in caplog.text
    out = capsys.readouterr()
    assert KEY not in out.out + out.err
    assert server.authorization == {f"Bearer {KEY}"}  # ...and yet it was sent
    assert len(results) == n
    for i, r in enumerate(results):
        kind = plan.get(i)
        expected_error, expected_attempts = (KINDS[kind][2], KINDS[kind][3]) if kind else (None, 1)
        assert r.error_reason == expected_error, (i, kind, r)
        assert r.ok == (expected_error is None)
        assert r.attempts == expected_attempts, (i, kind, r)
        assert server.arrivals[f"req-{i}"] == expected_attempts  # no extra sends, none lost
        if r.ok:
            assert r.text == f"echo: req-{i}"  # its own answer, in its own slot
        if kind == "429":
            assert r.latency_s >= 2.0  # waited the server's Retry-After, not the 0.05 s backoff cap


def test_concurrency_limit_and_input_order(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with FakeChatServer(latency_s=0.05) as server:
        results = OpenAIChatClient(_cfg(server.base_url, concurrency=4)).complete([_conv(i) for i in range(24)])
    assert [r.text for r in results] == [f"echo: req-{i}" for i in range(24)]
    assert server.max_in_flight == 4


def test_unreachable_server_is_a_reported_failure(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with FakeChatServer() as server:
        url = server.base_url
    results = OpenAIChatClient(_cfg(url, max_retries=1)).complete([_conv(0), _conv(1)])  # server stopped
    assert [(r.ok, r.error_reason, r.attempts) for r in results] == [(False, "connection", 2)] * 2


def test_key_stays_out_of_repr_pickle_and_errors(monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, KEY)
    client = OpenAIChatClient(_cfg("http://127.0.0.1:9/v1"))
    assert KEY not in repr(client) and KEY_ENV in repr(client)
    assert KEY not in repr(client.__dict__)
    blob = pickle.dumps(client._auth)
    assert KEY.encode() not in blob
    monkeypatch.setenv(KEY_ENV, "other")
    assert pickle.loads(blob)._key == "other"  # an unpickled copy reads its own environment


def test_missing_key_sends_no_header_and_warns_with_the_variable_name(monkeypatch, caplog):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with FakeChatServer() as server:
        results = OpenAIChatClient(_cfg(server.base_url)).complete([_conv(0)])
    assert results[0].ok and server.authorization == set()
    assert KEY_ENV in caplog.text


def test_empty_batch():
    assert OpenAIChatClient(_cfg("http://127.0.0.1:9/v1")).complete([]) == []


@pytest.mark.parametrize(
    "value, expected",
    [("3", 3.0), ("0", 0.0), ("1.5", 1.5), ("-4", 0.0), (None, None), ("", None), ("soon", None)],
)
def test_parse_retry_after_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=7), usegmt=True), now=now) == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0.0  # in the past: no wait


def test_retry_after_date_is_honoured(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=2), usegmt=True)
    with FakeChatServer(faults=lambda key, attempt: "429" if attempt == 0 else "ok", retry_after=when) as server:
        start = time.monotonic()
        (r,) = OpenAIChatClient(_cfg(server.base_url)).complete([_conv(0)])
    assert r.ok and r.attempts == 2
    assert time.monotonic() - start >= 0.9  # HTTP dates have 1 s resolution: at least ~1 s of the 2 s remains
