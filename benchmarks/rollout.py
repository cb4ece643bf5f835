"""HF-backend rollout throughput through the Ray actor against raw `model.generate` on the same batch.

    (actor)     RolloutManager.generate: requests -> RolloutWorker (Ray actor) -> batched, left-padded generate
                with per-row seeded sampling -> Samples (text, ids, finish reason) back to the driver
    (generate)  model.generate(do_sample=True) on the same rows in this process, the same thread count

Both sample at temperature 1 with no top-k/top-p, the same prompts (synthetic arithmetic, chat template) and
the same max_new_tokens and one intra-op thread each; tokens/s counts generated tokens up to and including EOS.
Target: `ratio_vs_generate` (actor tokens/s / generate tokens/s, the median over back-to-back pairs) >= 0.9.
`cpu_ratio_vs_generate` compares tokens per CPU-second of the generating process, which a shared machine's load
swings do not move.

    python benchmarks/rollout.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rayscale.config import RoleResources, RolloutConfig, SyntheticTaskConfig, TinyModelConfig  # noqa: E402


def _prompts(tokenizer, count: int) -> list[str]:
    from rayscale.data.synthetic import synthetic_splits
    from rayscale.prompts import render_prompt

    problems = synthetic_splits(SyntheticTaskConfig(train_size=count, test_size=1))["train"]
    return [render_prompt(tokenizer, p.question) for p in problems]


def _raw_generate(model, tokenizer, prompts: list[str], n: int, max_new_tokens: int) -> int:
    rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts for _ in range(n)]
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                             top_p=1.0, max_new_tokens=max_new_tokens, pad_token_id=pad)
    tokens = 0
    for row in out[:, width:].tolist():
        tokens += next((k + 1 for k, t in enumerate(row) if t == tokenizer.eos_token_id), len(row))
    return tokens


def _cpu_seconds(_actor) -> float:
    return time.process_time()


def run(args) -> dict:
    import ray

    from rayscale.actors.rollout import RolloutManager
    from rayscale.models import load_model, load_tokenizer, make_tiny_model
    from rayscale.types import RolloutRequest

    threads = 1  # per side; on a small shared machine two intra-op threads mostly wait for each other
    torch.set_num_threads(threads)
    tmp = tempfile.TemporaryDirectory()
    model_dir = str(make_tiny_model(Path(tmp.name) / "model", TinyModelConfig()))
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, "float32").eval()
    prompts = _prompts(tokenizer, args.prompts)
    rows = args.prompts * args.n
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        manager = RolloutManager(model_dir, RolloutConfig(num_workers=1, batch_size=rows, temperature=1.0,
                                                          max_new_tokens=args.max_new_tokens),
                                 resources_cfg=RoleResources(num_cpus=threads))  # Ray gives it `threads` threads
        requests = [RolloutRequest(f"p{i}", p, n=args.n) for i, p in enumerate(prompts)]

        worker = manager.workers[0]

        def actor() -> tuple[float, float, int]:
            cpu0 = ray.get(worker.__ray_call__.remote(_cpu_seconds))
            start = time.perf_counter()
            out = manager.generate(requests)
            wall = time.perf_counter() - start
            cpu = ray.get(worker.__ray_call__.remote(_cpu_seconds)) - cpu0
            return wall, cpu, sum(len(s.token_ids) for samples in out for s in samples)

        def generate() -> tuple[float, float, int]:
            cpu0, start = time.process_time(), time.perf_counter()
            tokens = _raw_generate(model, tokenizer, prompts, args.n, args.max_new_tokens)
            return time.perf_counter() - start, time.process_time() - cpu0, tokens

        actor(), generate()  # warm-up
        rates: dict[str, list[float]] = {"actor": [], "generate": []}
        cpu_rates: dict[str, list[float]] = {"actor": [], "generate": []}
        for i in range(args.repeats):  # back-to-back pairs in alternating order: drifting load hits both alike
            pair = (("actor", actor), ("generate", generate))
            for name, fn in pair if i % 2 == 0 else pair[::-1]:
                wall, cpu, tokens = fn()
                rates[name].append(tokens / wall)
                cpu_rates[name].append(tokens / cpu)
        manager.shutdown()
    finally:
        ray.shutdown()
        tmp.cleanup()
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"quick": args.quick, "rows": rows, "prompts": args.prompts, "n": args.n,
            "max_new_tokens": args.max_new_tokens, "threads": threads, "repeats": args.repeats,
            "model": TinyModelConfig().model_dump(), "all_tokens_per_s": rates,
            "actor_tokens_per_s": med["actor"], "generate_tokens_per_s": med["generate"],
            # the median of the per-pair ratios: robust to the load swings of a shared machine
            "ratio_vs_generate": statistics.median(a / g for a, g in zip(rates["actor"], rates["generate"])),
            "ratio_of_medians": med["actor"] / med["generate"],
            # tokens per CPU-second of the generating process: what the code costs, whatever share of the
            # machine it was given while other work ran beside it
            "all_tokens_per_cpu_s": cpu_rates,
            "cpu_ratio_vs_generate": statistics.median(cpu_rates["actor"]) / statistics.median(cpu_rates["generate"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="32 rows x 32 tokens, 4 pairs (about a minute)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    args.prompts, args.n = (8, 4) if args.quick else (16, 4)
    args.max_new_tokens = 32 if args.quick else 64
    args.repeats = args.repeats or (4 if args.quick else 10)
    res = run(args)
    print(f"\nHF rollout, tiny Llama, {res['rows']} rows x {res['max_new_tokens']} new tokens, "
          f"{res['threads']} threads, medians of {res['repeats']} back-to-back pairs")
    print(f"{'path':<12}{'tokens/s':>10}")
    for k in ("generate", "actor"):
        print(f"{k:<12}{res[k + '_tokens_per_s']:>10.0f}")
    print(f"ratio_vs_generate = {res['ratio_vs_generate']:.2f} (target >= 0.9)   "
          f"per CPU-second: {res['cpu_ratio_vs_generate']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
