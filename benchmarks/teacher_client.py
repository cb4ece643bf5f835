"""Teacher API client throughput: requests/s at concurrency 32 against a loopback server answering in 200 ms.

With 32 requests in flight and 0.2 s per answer no client can beat 32 / 0.2 = 160 requests/s: that bound is the
reference. Also measured in the same run: a bare httpx.AsyncClient + Semaphore loop (no retries, no parsing) as
the floor of what the HTTP stack itself costs. The server runs in its own process so it does not share the GIL
with the client being measured.

    python benchmarks/teacher_client.py [--quick] [--json PATH]

JSON keys: bound_rps, rayscale_rps, raw_httpx_rps, ratio_vs_bound (target >= 0.8), ratio_vs_raw_httpx, ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: its tests/ fakes (the chat server)

from rayscale.config import OpenAITeacherConfig
from rayscale.teacher.openai_client import OpenAIChatClient
from tests.chat_server import FakeChatServer

CONCURRENCY = 32
LATENCY_S = 0.2


def _serve(conn, latency_s: float) -> None:
    with FakeChatServer(latency_s=latency_s) as server:
        conn.send(server.base_url)
        conn.recv()  # block until the parent says stop


def _conversations(n: int, tag: str) -> list[list[dict]]:
    return [[{"role": "user", "content": f"{tag}-{i}"}] for i in range(n)]


async def _raw_httpx(base_url: str, conversations: list[list[dict]]) -> list[float]:
    sem = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url + "/", limits=limits, timeout=30) as http:

        async def one(messages):
            async with sem:
                start = time.monotonic()
                r = await http.post("chat/completions", json={"model": "m", "messages": messages})
                r.json()["choices"][0]["message"]["content"]
                return time.monotonic() - start

        return list(await asyncio.gather(*(one(m) for m in conversations)))


def _row(name: str, n: int, wall: float, latencies: list[float], ok: int, bound: float) -> dict:
    rps = n / wall
    lat = sorted(latencies)
    return {
        "name": name, "requests": n, "ok": ok, "wall_s": wall, "rps": rps, "ratio_vs_bound": rps / bound,
        "p50_s": lat[len(lat) // 2], "p95_s": lat[int(0.95 * (len(lat) - 1))], "mean_s": statistics.fmean(lat),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests (about 10 s in all)")
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    ap.add_argument("--requests", type=int, help="requests per measured run (default 1600; 480 with --quick)")
    args = ap.parse_args()
    n = args.requests or (480 if args.quick else 1600)
    bound = CONCURRENCY / LATENCY_S

    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=_serve, args=(child, LATENCY_S), daemon=True)
    proc.start()
    try:
        base_url = parent.recv()
        cfg = OpenAITeacherConfig(base_url=base_url, api_key_env="RAYSCALE_BENCH_NO_KEY", concurrency=CONCURRENCY,
                                  timeout_s=30, max_retries=0)
        client = OpenAIChatClient(cfg)
        client.complete(_conversations(CONCURRENCY, "warmup"))  # connections, imports, server JIT-free warmup

        start = time.monotonic()
        raw = asyncio.run(_raw_httpx(base_url, _conversations(n, "raw")))
        raw_row = _row("raw httpx + Semaphore", n, time.monotonic() - start, raw, n, bound)

        start = time.monotonic()
        results = client.complete(_conversations(n, "rayscale"))
        ours = _row("rayscale OpenAIChatClient", n, time.monotonic() - start, [r.latency_s for r in results],
                    sum(r.ok for r in results), bound)
    finally:
        parent.send("stop")
        proc.join(timeout=30)

    print(f"\nteacher client, concurrency {CONCURRENCY}, server latency {LATENCY_S * 1000:.0f} ms, {n} requests\n")
    print(f"{'client':<28}{'ok':>6}{'wall s':>9}{'req/s':>9}{'x bound':>9}{'p50 ms':>9}{'p95 ms':>9}")
    print(f"{'bound: 32 / 0.2 s':<28}{'':>6}{n / bound:>9.2f}{bound:>9.1f}{1.0:>9.2f}{LATENCY_S * 1000:>9.0f}{'':>9}")
    for row in (raw_row, ours):
        print(f"{row['name']:<28}{row['ok']:>6}{row['wall_s']:>9.2f}{row['rps']:>9.1f}{row['ratio_vs_bound']:>9.2f}"
              f"{row['p50_s'] * 1000:>9.0f}{row['p95_s'] * 1000:>9.0f}")
    ratio = ours["ratio_vs_bound"]
    print(f"\nratio_vs_bound = {ratio:.3f} (target >= 0.8): {'PASS' if ratio >= 0.8 else 'BELOW TARGET'}")

    if args.json:
        figures = {
            "concurrency": CONCURRENCY, "server_latency_s": LATENCY_S, "requests": n, "bound_rps": bound,
            "rayscale_rps": ours["rps"], "raw_httpx_rps": raw_row["rps"], "ratio_vs_bound": ratio,
            "ratio_vs_raw_httpx": ours["rps"] / raw_row["rps"], "rayscale_ok": ours["ok"],
            "rayscale_p50_s": ours["p50_s"], "rayscale_p95_s": ours["p95_s"], "target_ratio": 0.8,
        }
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
