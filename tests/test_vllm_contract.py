"""The vLLM contract (rayscale.rollout.vllm_contract): every vLLM name rayscale touches, checked against the
installed vLLM when an engine starts; a missing one is one clear error naming the supported range."""

from __future__ import annotations

import importlib.util
import types

import pytest

from rayscale.rollout import vllm_contract as C


def test_a_missing_name_or_parameter_is_reported_by_entry():
    def resolve(module, attr):
        if attr == "LLM.sleep":
            raise AttributeError(attr)
        return types.SimpleNamespace()

    def parameters(obj):
        return {"level", "tags", "prompts", "sampling_params"}  # everything else "renamed"

    gaps = C.missing(resolve, parameters)
    assert "vllm.LLM.sleep" in gaps
    assert "vllm.LLM.collective_rpc(method, args)" in gaps
    assert "vllm.LLM.generate(use_tqdm)" in gaps and not any(g.startswith("vllm.LLM.wake_up") for g in gaps)


def test_the_error_names_the_supported_range_and_what_is_missing(monkeypatch):
    monkeypatch.setattr(C, "_CHECKED", False)
    monkeypatch.setattr(C, "missing", lambda: ["vllm.LLM.update_weights(request)"])
    with pytest.raises(C.VLLMContractError, match=r"is not a vLLM rayscale supports \(vllm>=0\.32,<0\.33\): it "
                                                  r"lacks vllm\.LLM\.update_weights\(request\)"):
        C.check()


def test_the_extra_is_bound_to_the_supported_range():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["vllm"] == [f"vllm{C.SUPPORTED}"]


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM (the vLLM environment)")
def test_the_installed_vllm_has_every_name_rayscale_touches():
    assert C.missing() == []
    C.check()


# -- the same contract read from a release's sources (rayscale.rollout.vllm_sources), nothing imported ----------

# A miniature vLLM exposing names the ways vLLM 0.32 does: a lazy top-level name declared under TYPE_CHECKING, a
# method inherited from a mixin in another module (relative import), an @config dataclass with a ClassVar, a
# msgspec Struct, a module __getattr__ (current_platform), an alias, an __init__ inherited through Generic[T].
MINI_VLLM = {
    "vllm/__init__.py": """
import typing
MODULE_ATTRS = {"LLM": ".entrypoints.llm:LLM"}
if typing.TYPE_CHECKING:
    from vllm.entrypoints.llm import LLM
else:
    def __getattr__(name):
        raise AttributeError(name)
""",
    "vllm/entrypoints/__init__.py": "",
    "vllm/entrypoints/llm.py": """
from .rl import WeightsMixin
class LLM(WeightsMixin):
    def __init__(self, model, **kwargs): ...
    def generate(self, prompts, sampling_params=None, *, use_tqdm=True): ...
""",
    "vllm/entrypoints/rl.py": """
class WeightsMixin:
    def update_weights(self, request): ...
""",
    "vllm/config/__init__.py": "from vllm.config.transfer import TransferConfig\n",
    "vllm/config/utils.py": "def config(cls):\n    return cls\n",
    "vllm/config/transfer.py": """
from typing import ClassVar
from vllm.config.utils import config
@config
class TransferConfig:
    backend: str = "nccl"
    registry: ClassVar[dict] = {}
""",
    "vllm/sampling.py": """
import msgspec
class SamplingParams(msgspec.Struct):
    n: int = 1
    seed: int | None = None
""",
    "vllm/platforms/__init__.py": """
def __getattr__(name):
    if name == "current_platform":
        return object()
    raise AttributeError(name)
""",
    "vllm/utils.py": "def _gemm(layer, remove_weight): ...\ndispatch_gemm = _gemm\n",
    "vllm/engine.py": """
from typing import Generic, TypeVar
T = TypeVar("T")
class Base:
    def __init__(self, config, device): ...
class Engine(Base, Generic[T]):
    def parse(self, info): ...
""",
}

MINI_CONTRACT = (
    ("vllm", "LLM", ("anything",)),  # **kwargs: accepts any name
    ("vllm", "LLM.generate", ("prompts", "sampling_params", "use_tqdm")),
    ("vllm", "LLM.update_weights", ("request",)),
    ("vllm.config", "TransferConfig", ("backend",)),
    ("vllm.sampling", "SamplingParams", ("n", "seed")),
    ("vllm.platforms", "current_platform", ()),
    ("vllm.utils", "dispatch_gemm", ("layer", "remove_weight")),
    ("vllm.engine", "Engine", ("config", "device")),
    ("vllm.engine", "Engine.parse", ()),
)

# The next release renames, drops and moves things.
DRIFTED = {
    "vllm/entrypoints/llm.py": MINI_VLLM["vllm/entrypoints/llm.py"].replace("use_tqdm", "progress"),
    "vllm/entrypoints/rl.py": "class WeightsMixin:\n    def update_weights_v2(self, request): ...\n",
    "vllm/sampling.py": MINI_VLLM["vllm/sampling.py"].replace("seed", "random_seed"),
    "vllm/platforms/__init__.py": "def __getattr__(name):\n    raise AttributeError(name)\n",
    "vllm/engine.py": MINI_VLLM["vllm/engine.py"].replace("device)", "dev)"),
}


def _write_tree(root, files):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _write_wheel(path, files):
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for rel, text in files.items():
            zf.writestr(rel, text)
    return path


def test_the_source_reader_finds_names_the_ways_vllm_exposes_them(tmp_path):
    tree = _write_tree(tmp_path / "site-packages", MINI_VLLM)
    wheel = _write_wheel(tmp_path / "vllm-0.0.0-py3-none-any.whl", MINI_VLLM)
    for path in (tree, tree / "vllm", wheel):
        assert C.missing_in_sources(path, MINI_CONTRACT) == [], path
    # a ClassVar is no field, and a field-built class takes only its fields
    assert C.missing_in_sources(wheel, (("vllm.config", "TransferConfig", ("registry", "backend")),
                                        ("vllm.sampling", "SamplingParams", ("n", "top_k")))) == [
        "vllm.config.TransferConfig(registry)", "vllm.sampling.SamplingParams(top_k)"]


def test_a_release_that_drifted_is_named_entry_by_entry(tmp_path):
    wheel = _write_wheel(tmp_path / "vllm-9.9.9-py3-none-any.whl", {**MINI_VLLM, **DRIFTED})
    assert C.missing_in_sources(wheel, MINI_CONTRACT) == [
        "vllm.LLM.generate(use_tqdm)",
        "vllm.LLM.update_weights",
        "vllm.sampling.SamplingParams(seed)",
        "vllm.platforms.current_platform",
        "vllm.engine.Engine(device)",
    ]


def test_the_command_line_exits_1_naming_what_is_missing_and_2_without_sources(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(C, "CONTRACT", MINI_CONTRACT)
    good = _write_tree(tmp_path / "good", {**MINI_VLLM, "vllm/_version.py": "__version__ = version = '0.32.0'\n"})
    assert C.main([str(good)]) == 0
    assert "vllm 0.32.0" in capsys.readouterr().out
    bad = _write_tree(tmp_path / "bad", {**MINI_VLLM, **DRIFTED})
    assert C.main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert "lacks 5 of the 9 names" in out and "vllm.LLM.update_weights" in out
    assert C.main([str(tmp_path / "nowhere")]) == 2
    assert "neither a wheel nor a directory" in capsys.readouterr().err


def test_a_failed_download_raises_with_pips_words(tmp_path, monkeypatch):
    import subprocess

    seen = {}

    def run(cmd, **kwargs):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for vllm==9.9\n")

    monkeypatch.setattr(C.subprocess, "run", run)
    with pytest.raises(RuntimeError, match="No matching distribution found for vllm==9.9"):
        C.download_wheel("vllm==9.9", tmp_path)
    assert {"--no-deps", "--only-binary=:all:", "manylinux_2_28_x86_64"} <= set(seen["cmd"])


def _installed_vllm_sources():
    spec = importlib.util.find_spec("vllm")  # finds the package without importing it
    return list(spec.submodule_search_locations)[0]


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM (the vLLM environment)")
def test_the_installed_vllm_read_as_sources_agrees_with_it_imported():
    from rayscale.rollout.vllm_sources import SourceTree

    tree = SourceTree(_installed_vllm_sources())
    assert C.missing_in_sources(tree.path) == []
    for module, attr, params in C.CONTRACT:  # the reader sees what Python sees, for every name given parameters
        if params:
            read, imported = tree.parameters(tree.resolve(module, attr)), C._parameters(C._import_resolve(module, attr))
            assert read == imported, f"{module}.{attr}"


def test_the_cuda_wheel_the_gpu_extra_resolves_to_has_every_name():
    """The `vllm` wheel `pip install 'rayscale[vllm]'` installs on a GPU host, downloaded without dependencies
    (cached in .cache/wheels) and read from the zip. CI must run it: there a failed download fails."""
    import os
    from pathlib import Path

    from rayscale.rollout.vllm_sources import SourceTree

    cache = Path(__file__).resolve().parents[1] / ".cache" / "wheels"
    try:
        wheel = C.download_wheel(f"vllm{C.SUPPORTED}", cache)
    except RuntimeError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: {e}", pytrace=False)
        pytest.skip(f"no network to PyPI here: {e}")
    assert wheel.name.startswith("vllm-0.32.") and "x86_64" in wheel.name, wheel.name
    assert SourceTree(wheel).version().startswith("0.32."), "the wheel is not the release its name says"
    assert C.missing_in_sources(wheel) == []
