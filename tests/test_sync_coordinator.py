"""The weight-sync coordinator is the only reader of the `sync` settings (issue 15): no module of `rayscale/` but
config.py and sync/coordinator.py reads `<config>.sync.<key>` or handles a `SyncConfig`; everybody else is handed
plain values (the learner its bucket size once, the rollout manager a call timeout).

The sync itself, end to end over Ray, is tested in tests/test_rollout_ray.py (and the vLLM one in
tests/test_vllm_sync.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from rayscale.config import DEFAULT_BUCKET_BYTES, ConfigError, SyncConfig, load_config

PACKAGE = Path(__file__).resolve().parent.parent / "rayscale"
ALLOWED = {"config.py", "sync/coordinator.py"}  # the definition, and its one reader


def sync_readers(source: str) -> list[str]:
    """Where `source` reads the sync settings: an attribute chain through `.sync.` (`cfg.sync.verify`,
    `self.cfg.sync.bucket_bytes`), or any use of the name SyncConfig (an import, an annotation, a construction)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "sync"
                and not _is_package_path(node.value)):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Name) and node.id == "SyncConfig":
            found.append(f"line {node.lineno}: SyncConfig")
        elif isinstance(node, ast.ImportFrom) and any(a.name == "SyncConfig" for a in node.names):
            found.append(f"line {node.lineno}: imports SyncConfig")
    return found


def _is_package_path(node: ast.Attribute) -> bool:
    """`rayscale.sync.<module>`: a module path, not a setting."""
    return isinstance(node.value, ast.Name) and node.value.id == "rayscale"


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).as_posix() not in ALLOWED)


def test_the_scan_covers_the_package():
    names = {p.relative_to(PACKAGE).as_posix() for p in _modules()}
    assert {"controller.py", "actors/rollout.py", "actors/learner.py", "learner/engine.py", "sync/sender.py"} <= names
    assert not names & ALLOWED
    assert sync_readers((PACKAGE / "sync" / "coordinator.py").read_text())  # the reader is seen reading


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_only_the_coordinator_reads_the_sync_settings(path):
    found = sync_readers(path.read_text())
    assert not found, (f"rayscale/{path.relative_to(PACKAGE).as_posix()} reads sync settings {found}: ask the "
                       "coordinator (rayscale.sync.coordinator.WeightSync) for the value instead")


@pytest.mark.parametrize("source", [
    "timeout = cfg.sync.timeout_s",
    "self.bucket = self.cfg.sync.bucket_bytes",
    "backend = run.cfg.sync.resolve_backend(gpus)",
    "def f(cfg):\n    return cfg.sync.verify or 1\n",
    "from rayscale.config import RolloutConfig, SyncConfig",
    "def f(sync_cfg: SyncConfig):\n    pass\n",
    "x = SyncConfig(verify=True)",
])
def test_the_scan_catches_a_reader(source):
    assert sync_readers(source)


@pytest.mark.parametrize("source", [
    "weight_sync = WeightSync(cfg.sync, cfg.cluster.rollout.num_gpus)",  # handing the section over is not reading
    "n = actor.sync_ranks.remote()",
    "t = weight_sync.timeout_s",
    "import rayscale.sync.sender",
    "f = rayscale.sync.output_check.tolerance",
])
def test_the_scan_lets_the_rest_pass(source):
    assert not sync_readers(source)


def test_the_coordinator_reads_every_setting_once_and_hands_out_plain_values():
    from rayscale.sync.coordinator import WeightSync

    ws = WeightSync(SyncConfig(transport="object_store", bucket_size_mb=0.5, verify=True, timeout_s=7), 0)
    assert (ws.transport, ws.backend, ws.bucket_bytes, ws.verify, ws.timeout_s) == (
        "object_store", "gloo", 1 << 19, True, 7)
    assert WeightSync(SyncConfig(), rollout_gpus=1).backend == "nccl"  # auto: NCCL when rollout workers hold GPUs
    assert WeightSync(SyncConfig(backend="gloo"), rollout_gpus=1).backend == "gloo"
    assert WeightSync().bucket_bytes == DEFAULT_BUCKET_BYTES == load_config(None).sync.bucket_bytes
    ws.close()  # nothing to tear down: a no-op
    assert ws.version == 0


def test_an_unknown_transport_is_refused_before_anything_is_sent():
    from rayscale.sync.coordinator import WeightSync

    class Manager:
        workers: list = []
        on_restart = None

    with pytest.raises(ValueError, match="unknown sync transport 'carrier pigeon'"):
        WeightSync().push([], Manager(), 1, transport="carrier pigeon")


# ------------------------------------------------------------------ sync.transport: vllm_native
def test_vllm_native_builds_the_engines_with_rayscales_weight_transfer_engine():
    from rayscale.sync.coordinator import WeightSync

    cfg = load_config(None, ["sync.transport=vllm_native", "rollout.backend=vllm"]).sync
    ws = WeightSync(cfg, rollout_gpus=0)
    assert (ws.transport, ws.backend, ws.native_engine, ws.vllm_weight_transfer) == (
        "vllm_native", "gloo", "rayscale", "rayscale")  # auto: rayscale's engine, over the gloo group on CPU
    assert WeightSync(SyncConfig(native_backend="rayscale"), 0).vllm_weight_transfer is None  # not the transport
    with pytest.raises(ConfigError, match="native_backend"):
        load_config(None, ["sync.native_backend=carrier_pigeon"])


@pytest.mark.parametrize("backend", ["nccl", "ipc"])
def test_vllms_cuda_only_weight_transfer_is_refused_where_it_would_sync_nothing(backend):
    from rayscale.sync.coordinator import WeightSync

    # vLLM issue #57022: off CUDA, vLLM's NCCL transfer returns as if it had synced. Refused up front, by key.
    with pytest.raises(ValueError, match=rf"sync.native_backend: {backend} cannot sync here: the rollout workers "
                                         r"hold no GPU .*#57022.*Use sync.native_backend: rayscale"):
        WeightSync(SyncConfig(transport="vllm_native", native_backend=backend), rollout_gpus=0)
    with pytest.raises(ValueError, match="trainer engine.*Use sync.native_backend: rayscale"):
        WeightSync(SyncConfig(transport="vllm_native", native_backend=backend), rollout_gpus=1)
    # and a config that asks for it fails when it loads (exit 2 from the CLI), not when the trainer starts
    with pytest.raises(ConfigError, match=rf"sync.native_backend: {backend} cannot sync here"):
        load_config(None, ["sync.transport=vllm_native", "rollout.backend=vllm", f"sync.native_backend={backend}"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal of a CPU engine")
def test_a_cpu_vllm_engine_refuses_cuda_only_weight_transfer_before_it_starts():
    from rayscale.config import VLLMConfig
    from rayscale.rollout.vllm_engine import make_llm

    with pytest.raises(ValueError, match="'ipc' weight transfer needs CUDA.*sync.native_backend: rayscale"):
        make_llm("no-model-needed", VLLMConfig(), seed=0, weight_transfer="ipc")  # before vLLM is even imported


def test_the_hf_backend_refuses_vllm_native():
    from rayscale.config import RolloutConfig
    from rayscale.rollout.backends import make_backend

    with pytest.raises(ConfigError, match="vllm_native syncs through vLLM's weight-transfer API; it needs "
                                          "rollout.backend: vllm"):
        load_config(None, ["sync.transport=vllm_native"])  # the default rollout backend is hf

    with pytest.raises(ValueError, match="vllm_native .* needs rollout.backend: vllm"):
        make_backend("no-model-needed", RolloutConfig(backend="hf"), weight_transfer="rayscale")
