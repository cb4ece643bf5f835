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

from rayscale.config import DEFAULT_BUCKET_BYTES, SyncConfig
from rayscale.config_loading import load_config
from rayscale.errors import ConfigError

PACKAGE = Path(__file__).resolve().parent.parent / "rayscale"
ALLOWED = {"config.py", "sync/coordinator.py", "sync/transports.py"}  # the definition, its reader, the capability checks


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
    from rayscale.sync.transports import ObjectStoreTransport

    ws = WeightSync(SyncConfig(transport="object_store", bucket_size_mb=0.5, verify=True, timeout_s=7), 0)
    assert isinstance(ws.transport, ObjectStoreTransport)
    assert (ws.transport.name, ws.backend, ws.bucket_bytes, ws.verify, ws.timeout_s) == (
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


# ------------------------------------------------------------------ one object per transport
def test_every_configurable_transport_is_one_registered_class_chosen_once():
    import pickle

    from rayscale.sync.transports import TRANSPORTS, choose

    names = set(SyncConfig.model_fields["transport"].annotation.__args__) - {"auto"}
    assert names == set(TRANSPORTS)
    assert len({type(t) for t in TRANSPORTS.values()}) == len(TRANSPORTS)
    for name, transport in TRANSPORTS.items():
        assert transport.name == name and choose(SyncConfig(transport=name), False) is transport
        assert pickle.loads(pickle.dumps(transport)) is transport  # travels to the actors as the registered object
    assert choose(SyncConfig(), colocated=True).name == "ipc" and choose(SyncConfig(), False).name == "broadcast"


def transport_names_in(source: str) -> list[str]:
    """String constants in `source` that are a transport's name (docstrings aside): a branch on the transport."""
    from rayscale.sync.transports import TRANSPORTS

    tree = ast.parse(source)
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [f"line {n.lineno}: {n.value!r}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and n.value in TRANSPORTS and id(n) not in docstrings]


def test_the_name_scan_sees_a_branch():
    assert transport_names_in('if transport == "vllm_native":\n    pass\n')
    assert not transport_names_in('def f():\n    """through the object_store, then ipc"""\n')


# config.py declares the names (sync.transport's Literal) and resolves `auto`; transports.py is where they live
@pytest.mark.parametrize("path", [p for p in sorted(PACKAGE.rglob("*.py"))
                                  if p.relative_to(PACKAGE).as_posix() not in {"config.py", "sync/transports.py"}],
                         ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_module_outside_the_transport_classes_names_a_transport(path):
    found = transport_names_in(path.read_text())
    assert not found, (f"rayscale/{path.relative_to(PACKAGE).as_posix()} names a transport {found}: call the "
                       "transport object (rayscale.sync.transports) instead of branching on its name")


# ------------------------------------------------------------------ sync.transport: vllm_native
def test_vllm_native_builds_the_engines_with_rayscales_weight_transfer_engine():
    from rayscale.sync.coordinator import WeightSync

    cfg = load_config(None, ["sync.transport=vllm_native", "rollout.backend=vllm"]).sync
    ws = WeightSync(cfg, rollout_gpus=0)
    assert (ws.transport.name, ws.backend, ws.vllm_weight_transfer) == (
        "vllm_native", "gloo", "rayscale")  # auto: rayscale's engine, over the gloo group on CPU
    assert WeightSync(SyncConfig(native_backend="rayscale"), 0).vllm_weight_transfer is None  # not the transport
    with pytest.raises(ConfigError, match="native_backend"):
        load_config(None, ["sync.native_backend=carrier_pigeon"])


@pytest.mark.parametrize("backend", ["nccl", "ipc"])
def test_vllms_cuda_only_weight_transfer_is_refused_when_the_config_loads(backend):
    # vLLM issue #57022: off CUDA, vLLM's NCCL transfer returns as if it had synced. Refused up front, by key, once:
    # when the config loads (exit 2 from the CLI), not when the trainer or an engine starts.
    base = ["sync.transport=vllm_native", "rollout.backend=vllm", f"sync.native_backend={backend}"]
    with pytest.raises(ConfigError, match=rf"sync.native_backend: {backend} cannot sync here: the rollout workers "
                                          r"hold no GPU .*#57022.*Use sync.native_backend: rayscale"):
        load_config(None, base)
    with pytest.raises(ConfigError, match="trainer engine.*Use sync.native_backend: rayscale"):
        load_config(None, [*base, "cluster.rollout.num_gpus=1"])


def test_the_hf_backend_refuses_vllm_native_when_the_config_loads():
    with pytest.raises(ConfigError, match="vllm_native syncs through vLLM's weight-transfer API; it needs "
                                          "rollout.backend: vllm"):
        load_config(None, ["sync.transport=vllm_native"])  # the default rollout backend is hf
