"""Async client for any OpenAI-compatible chat-completions endpoint (vLLM's server, hosted APIs).

One batch call sends every conversation concurrently (at most `concurrency` in flight), retries the transient
failures (429, 5xx, timeouts, connection errors, a garbled body) with exponential backoff and full jitter, honours a
server's `Retry-After`, and returns one `ChatResult` per conversation in input order. It never raises for a failed
request: a failure is a result with `ok=False` and a short `error_reason` such as `http_429` or `timeout`.

The API key is read from the environment variable *named* by the config and lives only inside `_BearerAuth`, which
adds the header at send time, hides the key from repr and re-reads the environment when unpickled, so the key never
reaches a log line, an exception message, a config dump or Ray's object store.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import logging
import os
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from rayscale.config import OpenAITeacherConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

Messages = list[dict[str, str]]


@dataclass
class ChatResult:
    ok: bool
    text: str | None  # the assistant message (also kept, partial, for `truncated`)
    error_reason: str | None  # None when ok; http_<status> | timeout | connection | malformed_json | bad_response | truncated
    attempts: int
    latency_s: float  # first send to final outcome, retries and backoff included (queueing excluded)
    finish_reason: str | None = None


class RequestError(Exception):
    """One failed attempt. The message is the reason alone: no URL, header or body ever goes into it."""

    def __init__(self, reason: str, retryable: bool, retry_after: float | None = None, text: str | None = None):
        super().__init__(reason)
        self.reason, self.retryable, self.retry_after, self.text = reason, retryable, retry_after, text


class _BearerAuth(httpx.Auth):
    """Adds `Authorization: Bearer <key>` per request; the key is read from the named environment variable."""

    def __init__(self, env_name: str):
        self.env_name = env_name
        self._key = os.environ.get(env_name) or None

    @property
    def has_key(self) -> bool:
        return self._key is not None

    def auth_flow(self, request: httpx.Request):
        if self._key is not None:
            request.headers["Authorization"] = f"Bearer {self._key}"
        yield request

    def __repr__(self) -> str:
        return f"_BearerAuth(env={self.env_name!r}, key={'set' if self._key else 'unset'})"

    def __reduce__(self):  # pickled copies carry the variable's name, never its value
        return (_BearerAuth, (self.env_name,))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def _message_text(body: bytes) -> tuple[str, str | None]:
    """(assistant text, finish_reason) from a chat-completions response body."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RequestError("malformed_json", retryable=True) from None
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise RequestError("bad_response", retryable=False) from None
    if not isinstance(text, str):
        raise RequestError("bad_response", retryable=False)
    finish = choice.get("finish_reason")
    if finish == "length":
        raise RequestError("truncated", retryable=False, text=text)
    return text, finish


class OpenAIChatClient:
    def __init__(self, cfg: OpenAITeacherConfig):
        self.cfg = cfg
        self._auth = _BearerAuth(cfg.api_key_env)
        if not self._auth.has_key:
            # Fine for a local vLLM server started without --api-key; a hosted API will answer 401.
            log.warning("teacher: environment variable %s is not set; sending requests without a key", cfg.api_key_env)
        self._backoff = wait_random_exponential(multiplier=cfg.backoff_initial_s, max=cfg.backoff_max_s)

    def __repr__(self) -> str:
        return f"OpenAIChatClient(base_url={self.cfg.base_url!r}, model={self.cfg.model!r}, auth={self._auth!r})"

    # ------------------------------------------------------------------------------------------ public
    def complete(self, conversations: Sequence[Messages], **params: Any) -> list[ChatResult]:
        """Blocking form of `complete_async` (runs its own event loop)."""
        return run_sync(self.complete_async(conversations, **params))

    async def complete_async(self, conversations: Sequence[Messages], **params: Any) -> list[ChatResult]:
        """One result per conversation, in input order; never raises for a failed request."""
        if not conversations:
            return []
        cfg = self.cfg
        sem = asyncio.Semaphore(cfg.concurrency)
        limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
        async with httpx.AsyncClient(
            base_url=cfg.base_url.rstrip("/") + "/", auth=self._auth, timeout=cfg.timeout_s, limits=limits
        ) as http:
            return list(await asyncio.gather(*(self._one(http, sem, i, m, params) for i, m in enumerate(conversations))))

    # ------------------------------------------------------------------------------------------ internals
    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RequestError) and exc.retry_after is not None:
            return min(exc.retry_after, self.cfg.retry_after_max_s)
        return self._backoff(state)

    async def _one(
        self, http: httpx.AsyncClient, sem: asyncio.Semaphore, index: int, messages: Messages, params: dict
    ) -> ChatResult:
        start: float | None = None  # first send, so queueing behind the semaphore is not counted as latency
        attempts = 0

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            reason = exc.reason if isinstance(exc, RequestError) else type(exc).__name__
            wait = state.next_action.sleep if state.next_action else 0.0
            log.debug("teacher request %d attempt %d failed (%s); retrying in %.2fs", index, attempts, reason, wait)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.cfg.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, RequestError) and e.retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    async with sem:  # held for the request only, never across a backoff sleep
                        start = start or time.monotonic()
                        text, finish = await self._attempt(http, messages, params)
            return ChatResult(True, text, None, attempts, time.monotonic() - start, finish)
        except RequestError as e:
            log.debug("teacher request %d failed after %d attempt(s): %s", index, attempts, e.reason)
            return ChatResult(False, e.text, e.reason, attempts, time.monotonic() - (start or time.monotonic()))
        except Exception as e:  # a bug must not sink the other requests of the batch; its type names it
            log.warning("teacher request %d: unexpected %s", index, type(e).__name__)
            elapsed = time.monotonic() - (start or time.monotonic())
            return ChatResult(False, None, f"unexpected_{type(e).__name__}", attempts, elapsed)

    async def _attempt(self, http: httpx.AsyncClient, messages: Messages, params: dict) -> tuple[str, str | None]:
        body = {
            "model": self.cfg.model,
            "messages": messages,
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
            **params,
        }
        try:
            async with asyncio.timeout(self.cfg.timeout_s):  # whole request, not per read as httpx's timeout
                response = await http.post("chat/completions", json=body)
        except (TimeoutError, httpx.TimeoutException):
            raise RequestError("timeout", retryable=True) from None
        except httpx.TransportError:  # refused, reset, incomplete body (server cut the response)
            raise RequestError("connection", retryable=True) from None
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise RequestError(f"http_{status}", retryable=True, retry_after=retry_after)
        if status >= 400:
            raise RequestError(f"http_{status}", retryable=False)
        return _message_text(response.content)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def probe_endpoint(cfg: OpenAITeacherConfig, timeout_s: float = 10.0) -> None:
    """Fail fast, before a run starts anything, when `teacher.openai.base_url` does not answer or refuses the key:
    a ConfigError naming the URL and the error (exit 2). Any other answer (also 404: not every server lists its
    models) means something is listening; the requests' own failures are counted per reason during the run."""
    from rayscale.errors import ConfigError  # the error the CLI turns into exit status 2

    url = cfg.base_url.rstrip("/") + "/models"
    try:
        response = httpx.get(url, auth=_BearerAuth(cfg.api_key_env), timeout=min(timeout_s, cfg.timeout_s))
    except httpx.TimeoutException:
        raise ConfigError(f"teacher.openai.base_url={cfg.base_url}: no answer from {url} within "
                          f"{min(timeout_s, cfg.timeout_s):g} s; start the server or fix the URL") from None
    except httpx.HTTPError as e:  # refused, unresolvable host, reset
        raise ConfigError(f"teacher.openai.base_url={cfg.base_url}: cannot reach {url} ({type(e).__name__}: "
                          f"{e}); start the server (docs/teacher.md) or fix the URL") from None
    if response.status_code in (401, 403):
        raise ConfigError(f"teacher.openai.base_url={cfg.base_url}: {url} answered HTTP {response.status_code}: "
                          f"the key is missing or refused; export it in the variable named by "
                          f"teacher.openai.api_key_env ({cfg.api_key_env})")
