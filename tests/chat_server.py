"""A loopback OpenAI-compatible chat-completions server with fault injection, for tests and benchmarks.

It runs an aiohttp app on 127.0.0.1 (a free port) in a background thread with its own event loop. Each request is
identified by its last user message; `faults(key, attempt)` picks what the server does with that request's
`attempt`-th arrival (0-based), so a test can script "429 first, then success" per request and know exactly which
outcome every request must end with.

Modes: ok | 429 (with Retry-After) | 500 | slow (answers after `slow_s`) | malformed_json |
truncated_text (finish_reason "length", content cut) | truncated_body (connection closed mid-body) | 401.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

FaultPlan = Callable[[str, int], str]
Replier = Callable[[list[dict]], str]

MODES = ("ok", "429", "500", "slow", "malformed_json", "truncated_text", "truncated_body", "401")


def echo_reply(messages: list[dict]) -> str:
    return f"echo: {messages[-1]['content']}"


@dataclass
class FakeChatServer:
    latency_s: float = 0.0  # every answer waits this long (the benchmark's 200 ms)
    faults: FaultPlan | None = None
    reply: Replier = echo_reply
    retry_after: str = "0"  # the Retry-After header sent with 429
    slow_s: float = 5.0
    arrivals: Counter = field(default_factory=Counter)  # key -> requests received
    modes_served: list[tuple[str, int, str]] = field(default_factory=list)  # (key, attempt, mode)
    authorization: set[str] = field(default_factory=set)  # Authorization headers seen
    max_in_flight: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None
        self.base_url = ""

    # -------------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> FakeChatServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> str:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-chat-server", daemon=True)
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=30)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
        self._loop = None

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # Handlers still sleeping (slow mode) would otherwise be destroyed pending when the loop closes.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self) -> int:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    # -------------------------------------------------------------------------------------- handler
    async def _handle(self, request):
        from aiohttp import web

        body = await request.json()
        messages = body["messages"]
        key = messages[-1]["content"]
        with self._lock:
            attempt = self.arrivals[key]
            self.arrivals[key] += 1
            mode = self.faults(key, attempt) if self.faults else "ok"
            self.modes_served.append((key, attempt, mode))
            if "Authorization" in request.headers:
                self.authorization.add(request.headers["Authorization"])
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            if mode == "429":
                return web.json_response({"error": "rate limited"}, status=429, headers={"Retry-After": self.retry_after})
            if mode in ("500", "401"):
                return web.json_response({"error": mode}, status=int(mode))
            if mode == "slow":
                await asyncio.sleep(self.slow_s)
            text = self.reply(messages)
            if mode == "malformed_json":
                return web.Response(text='{"choices": [{"message": {"content": "oops', content_type="application/json")
            finish = "stop"
            if mode == "truncated_text":
                text, finish = text[: max(1, len(text) // 2)], "length"
            payload = json.dumps(_completion(body.get("model", ""), text, finish)).encode()
            if mode == "truncated_body":
                return await self._cut_off(request, payload)
            return web.Response(body=payload, content_type="application/json")
        finally:
            with self._lock:
                self._in_flight -= 1

    @staticmethod
    async def _cut_off(request, payload: bytes):
        """Promise the whole body in Content-Length, send half of it, drop the connection."""
        from aiohttp import web

        response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": str(len(payload))})
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        request.transport.close()
        return response


def _completion(model: str, text: str, finish: str) -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
