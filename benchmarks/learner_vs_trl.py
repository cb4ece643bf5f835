"""DPO training throughput: one rayscale learner rank (DeepSpeed, on Ray) vs TRL's DPOTrainer, in one run.

Same ~20M-parameter tiny Llama, same pairs (prompts ~100 tokens, responses ~200), same batch size, fp32 on CPU
(or both on one GPU, still fp32, with --device cuda), same thread count, a frozen reference forward every step on
both sides, no activation checkpointing on either.
Throughput unit (both sides): tokens of the chosen and rejected sequences, prompt counted in each — what TRL logs
as num_tokens. Steady state: the first `--warmup` steps of each side are not timed.

    python benchmarks/learner_vs_trl.py [--quick] [--json out.json] [--device cpu|cuda] [--model DIR]

`--model DIR` trains a real HF model instead of the tiny one (e.g. SmolLM2-135M-Instruct: `rayscale model
smollm2-135m DIR`); the pairs are the same text, tokenized by that model's tokenizer.

Memory: each side's peak resident memory (the OS's high-water mark of its own process: the learner rank's actor,
TRL in a fresh child process), `peak_mem_ratio_vs_trl` = rayscale / TRL.

JSON keys: ratio_vs_trl, rayscale_tokens_per_s, trl_tokens_per_s, peak_mem_ratio_vs_trl, rayscale_peak_rss_bytes,
trl_peak_rss_bytes, and the setup.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rayscale.config import AlgoConfig, LearnerConfig, RoleResources, TinyModelConfig
from rayscale.types import PreferencePair

FULL = {"model": TinyModelConfig(hidden_size=512, num_layers=6, num_heads=8, intermediate_size=1376,
                                  max_position_embeddings=1024), "batch": 8, "warmup": 1, "steps": 4}
QUICK = {"model": TinyModelConfig(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=384,
                                   max_position_embeddings=1024), "batch": 4, "warmup": 1, "steps": 3}


def _steps_text(rng: random.Random, n: int) -> str:
    """Arithmetic-style solution lines, cut to n characters (1 token per character with the tiny tokenizer)."""
    lines = []
    while sum(map(len, lines)) < n:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        lines.append(f"{a}*{b}={a * b + rng.choice([0, 0, 0, 1, -1])}\n")
    return "".join(lines)[:n]


def make_pairs(count: int, seed: int = 0) -> list[PreferencePair]:
    rng = random.Random(seed)
    return [PreferencePair(str(i), f"<|user|>{_steps_text(rng, rng.randint(80, 118))}<|assistant|>",
                           chosen=_steps_text(rng, rng.randint(150, 250)),
                           rejected=_steps_text(rng, rng.randint(150, 250)))
            for i in range(count)]


def pair_tokens(tokenizer, pair: PreferencePair) -> int:
    n = lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"])
    return 2 * n(pair.prompt) + n(pair.chosen) + n(pair.rejected) + 2  # + EOS on each response


def run_rayscale(model_dir: str, pairs: list, batch: int, warmup: int, threads: int, zero_stage: int,
                 lr: float, device: str = "cpu", precision: str = "fp32") -> dict:
    import ray

    from rayscale.actors.learner import LearnerGroup

    gpus = int(device == "cuda")  # the rank's device follows its GPU; fp32 on both devices, as TRL here
    cfg = LearnerConfig(num_ranks=1, zero_stage=zero_stage, micro_batch_size=batch, lr=lr, max_seq_len=1024,
                        ref_mode="replicated", precision=precision)
    ray.init(address="local", num_cpus=threads, include_dashboard=False, log_to_driver=False,
             **({"num_gpus": gpus} if gpus else {}))
    try:
        with LearnerGroup(model_dir, cfg, AlgoConfig(loss="sigmoid", beta=0.1),
                          RoleResources(num_cpus=threads, num_gpus=gpus)) as group:
            tokens = seconds = 0.0
            for step in range(len(pairs) // batch):
                started = time.perf_counter()
                metrics = group.train_dpo(pairs[step * batch:(step + 1) * batch])
                elapsed = time.perf_counter() - started  # caller's wall clock: tokenization and Ray included
                if step >= warmup:
                    tokens += metrics["tokens"]
                    seconds += elapsed
            info = group.info[0]
            memory = group.memory()[0]
    finally:
        ray.shutdown()
    return {"tokens_per_s": tokens / seconds, "tokens": tokens, "seconds": seconds, "threads": info["threads"],
            "last_loss": metrics["loss"], "device": info["device"], "peak_rss_bytes": memory["peak_rss_bytes"]}


def run_trl_process(*args, **kwargs) -> dict:
    """run_trl in a fresh process, so its peak memory is the trainer's alone (as a learner rank's is its own)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_trl_with_peak, *args, **kwargs).result()


def _trl_with_peak(*args, **kwargs) -> dict:
    import resource

    result = run_trl(*args, **kwargs)
    return {**result, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def run_trl(model_dir: str, pairs: list, batch: int, warmup: int, threads: int, lr: float, out_dir: str,
            device: str = "cpu", precision: str = "fp32") -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from rayscale.models import load_tokenizer

    torch.set_num_threads(threads)
    tok = load_tokenizer(model_dir)
    policy = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa")
    ref = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa")
    args = DPOConfig(output_dir=out_dir, per_device_train_batch_size=batch, max_steps=len(pairs) // batch,
                     learning_rate=lr, lr_scheduler_type="constant", beta=0.1, loss_type=["sigmoid"],
                     report_to="none", use_cpu=device == "cpu", bf16=precision != "fp32", activation_checkpointing=False,
                     max_length=None,
                     save_strategy="no", logging_steps=10**6, disable_tqdm=True, dataloader_num_workers=0, seed=0)

    class Clock(TrainerCallback):
        """Step wall time and tokens (TRL's own running count), from on_step_begin to on_step_end."""

        def __init__(self):
            self.steps, self.trainer = [], None

        def on_step_begin(self, *a, **k):
            self.t0, self.tokens0 = time.perf_counter(), self.trainer._total_train_tokens

        def on_step_end(self, *a, **k):
            self.steps.append((self.trainer._total_train_tokens - self.tokens0, time.perf_counter() - self.t0))

    clock = Clock()
    data = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=data, processing_class=tok,
                         callbacks=[clock])
    clock.trainer = trainer
    result = trainer.train()
    measured = clock.steps[warmup:]
    tokens, seconds = sum(t for t, _ in measured), sum(s for _, s in measured)
    return {"tokens_per_s": tokens / seconds, "tokens": tokens, "seconds": seconds, "threads": threads,
            "last_loss": result.training_loss, "device": str(trainer.args.device)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small model and few steps (about a minute)")
    parser.add_argument("--json", metavar="PATH", help="write the figures here")
    parser.add_argument("--batch", type=int, help="pairs per optimizer step (both sides)")
    parser.add_argument("--steps", type=int, help="timed steps per side")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--zero-stage", type=int, default=LearnerConfig().zero_stage, choices=[0, 1, 2, 3])
    parser.add_argument("--model", metavar="DIR", help="an HF model directory to train instead of the tiny model")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="both trainers on the CPU or on one GPU")
    parser.add_argument("--precision", choices=["fp32", "bf16-autocast"], default="fp32",
                        help="both sides: fp32, or fp32 weights with bf16 autocast (rayscale learner.precision="
                             "bf16-autocast; TRL bf16=True, which autocasts the same way)")
    args = parser.parse_args(argv)
    if args.model and not (Path(args.model) / "config.json").is_file():
        parser.error(f"--model {args.model}: no HF model there (config.json missing); build SmolLM2 with "
                     "`rayscale model smollm2-135m DIR`")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda needs a CUDA GPU: torch sees none here")

    setup = dict(QUICK if args.quick else FULL)
    batch = args.batch or setup["batch"]
    steps = args.steps or setup["steps"]
    warmup = setup["warmup"]
    lr = 1e-6

    from rayscale.models import load_tokenizer, make_tiny_model, num_parameters

    with tempfile.TemporaryDirectory(prefix="learner_vs_trl_") as tmp:
        model_dir = args.model or str(make_tiny_model(Path(tmp) / "model", setup["model"]))
        pairs = make_pairs(batch * (warmup + steps))
        tok = load_tokenizer(model_dir)
        lengths = [pair_tokens(tok, p) for p in pairs]
        from transformers import AutoModelForCausalLM

        params = num_parameters(AutoModelForCausalLM.from_pretrained(model_dir))
        print(f"model: {params / 1e6:.1f}M parameters; {len(pairs)} pairs, batch {batch}, {warmup} warm-up + "
              f"{steps} timed steps per side, {args.threads} threads, {args.precision} {args.device}; "
              f"mean pair tokens {sum(lengths) / len(lengths):.0f}", flush=True)
        ours = run_rayscale(model_dir, pairs, batch, warmup, args.threads, args.zero_stage, lr, args.device,
                            args.precision)
        print(f"rayscale: {ours['tokens_per_s']:.0f} tokens/s", flush=True)
        trl = run_trl_process(model_dir, pairs, batch, warmup, args.threads, lr, str(Path(tmp) / "trl"), args.device,
                              args.precision)
        print(f"trl:      {trl['tokens_per_s']:.0f} tokens/s", flush=True)

    ratio = ours["tokens_per_s"] / trl["tokens_per_s"]
    mem_ratio = ours["peak_rss_bytes"] / trl["peak_rss_bytes"]
    rows = [(f"rayscale learner (1 rank, ZeRO-{args.zero_stage})", ours), ("TRL DPOTrainer", trl)]
    print(f"\n{'trainer':<36}{'tokens/s':>10}{'tokens':>10}{'seconds':>10}{'threads':>9}{'peak GB':>9}")
    for name, r in rows:
        print(f"{name:<36}{r['tokens_per_s']:>10.0f}{r['tokens']:>10.0f}{r['seconds']:>10.1f}{r['threads']:>9}"
              f"{r['peak_rss_bytes'] / 1e9:>9.2f}")
    print(f"\nratio_vs_trl = {ratio:.2f}  (target >= 1.1)")
    print(f"peak_mem_ratio_vs_trl = {mem_ratio:.2f}  (peak resident memory of the learner rank's process / of TRL's "
          f"process; target <= 1.0)")
    figures = {
        "ratio_vs_trl": ratio,
        "rayscale_tokens_per_s": ours["tokens_per_s"],
        "trl_tokens_per_s": trl["tokens_per_s"],
        "peak_mem_ratio_vs_trl": mem_ratio,
        "rayscale_peak_rss_bytes": ours["peak_rss_bytes"],
        "trl_peak_rss_bytes": trl["peak_rss_bytes"],
        "model": args.model or "tiny",
        "model_parameters": params,
        "batch_pairs": batch,
        "timed_steps": steps,
        "warmup_steps": warmup,
        "threads": args.threads,
        "zero_stage": args.zero_stage,
        "mean_pair_tokens": sum(lengths) / len(lengths),
        "precision": args.precision,
        "device": args.device,
        "devices": {"rayscale": ours["device"], "trl": trl["device"]},
        "quick": args.quick,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
