"""DeepSpeed configuration dicts and the LR schedule, from LearnerConfig (pure: nothing here imports DeepSpeed)."""

from __future__ import annotations

from rayscale.config import LearnerConfig


def use_bf16(cfg: LearnerConfig, device: str) -> bool:
    """auto: bf16 on GPU, fp32 on CPU (bf16 matmuls are slow there and DeepSpeed's CPU path is tested in fp32)."""
    if cfg.precision == "auto":
        return device.startswith("cuda")
    return cfg.precision == "bf16"


def autocast_dtype(cfg: LearnerConfig):
    """bf16-autocast: the dtype the forward passes (policy and reference) run their matmuls in; None = no autocast.
    DeepSpeed's own bf16 stays off: weights, gradients and optimizer states are fp32."""
    import torch  # local: the config dicts above need no torch

    return torch.bfloat16 if cfg.precision == "bf16-autocast" else None


def offloads(cfg: LearnerConfig, device: str) -> bool:
    """Offload moves GPU state to host memory; a CPU rank has nothing to move (its config is left as it is)."""
    return cfg.offload != "none" and device.startswith("cuda")


def _zero_section(cfg: LearnerConfig, stage: int, device: str, trained: bool = True) -> dict:
    zero: dict = {"stage": stage}
    if stage == 3:
        zero["stage3_param_persistence_threshold"] = cfg.zero3_param_persistence_threshold
    if offloads(cfg, device):
        host = {"device": "cpu", "pin_memory": True}  # pinned: the host<->GPU copies are asynchronous
        if trained:
            zero["offload_optimizer"] = host
        if cfg.offload == "params" and stage == 3:
            zero["offload_param"] = host
    return zero


def policy_config(cfg: LearnerConfig, device: str) -> dict:
    """Config of the trained engine.

    Gradient accumulation is *unmanaged*: each call runs however many micro-batches its batch needs, backward()
    only accumulates, and step() is the one boundary that reduces, clips and updates. The global batch therefore
    varies call to call (online DPO yields a different number of pairs every iteration) with no fixed
    `train_batch_size` to keep in sync.
    """
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": 1,
        "managed_gradient_accumulation": False,
        "gradient_clipping": cfg.grad_clip,
        "optimizer": {
            "type": "AdamW",
            # torch's AdamW: DeepSpeed's fused/CPU Adam kernels are JIT-built C++/CUDA, slow to build and absent on
            # machines without a compiler; torch's foreach/fused implementation is as fast for this purpose.
            # Offloaded, the step runs on the host: DeepSpeed's CPU Adam (JIT-built, needs a C++ compiler) is
            # several times faster there than torch's, and is what ZeRO-Offload expects.
            "params": {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "torch_adam": not offloads(cfg, device)},
        },
        "zero_optimization": _zero_section(cfg, cfg.zero_stage, device),
        "bf16": {"enabled": use_bf16(cfg, device)},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def reference_config(cfg: LearnerConfig, device: str) -> dict:
    """Config of the frozen ZeRO-3 inference engine (ref_mode=zero3): parameters sharded, gathered per layer."""
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "zero_optimization": _zero_section(cfg, 3, device, trained=False),  # frozen: no optimizer to offload
        "bf16": {"enabled": use_bf16(cfg, device)},
        "steps_per_print": 10**9,
    }


def make_scheduler(cfg: LearnerConfig):
    """A callable DeepSpeed hands its optimizer to; DeepSpeed steps the schedule once per optimizer step and saves it
    in checkpoints."""
    from transformers import get_scheduler  # transformers + torch: heavy; the config dicts above need neither

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[cfg.lr_schedule]

    def build(optimizer):
        return get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.total_steps)

    return build
