"""Production code must not depend on the test helpers (`tests.*`: fakes such as the toy learner and the loopback
chat server live there, not in the package) nor on aiohttp (a test-only extra).

Every module of `rayscale/` is parsed with `ast`; every `import` and `from ... import` anywhere in it (function
bodies included: lazy imports count) is checked, relative imports resolved first.
"""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rayscale"
FORBIDDEN = ("tests", "rayscale.testing", "aiohttp")


def _module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_names(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, dotted name) of everything `path` imports; `from a import b` yields both `a` and `a.b`."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.append((node.lineno, source))
            names += [(node.lineno, f"{source}.{alias.name}") for alias in node.names]
    return names


def _is_forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def _production_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_production_modules_found():
    modules = {_module_name(p) for p in _production_modules()}
    assert {"rayscale.controller", "rayscale.sync.sender", "rayscale.teacher.openai_client"} <= modules


def test_the_installed_package_carries_no_test_code():
    """What `pip install` puts in site-packages: the packages setuptools finds under pyproject's rule."""
    import tomllib
    from setuptools import find_packages

    rule = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = find_packages(str(PACKAGE.parent), **rule)
    assert "rayscale" in shipped and "rayscale.sync" in shipped
    assert not [p for p in shipped if p == "tests" or p.startswith("tests.") or "testing" in p.split(".")], shipped


@pytest.mark.parametrize("path", _production_modules(), ids=lambda p: _module_name(p))
def test_production_does_not_import_test_helpers(path):
    bad = [f"line {line}: {name}" for line, name in _imported_names(path) if _is_forbidden(name)]
    assert not bad, f"{path.relative_to(PACKAGE.parent)} imports test-only code: {bad}"


@pytest.mark.parametrize("source", [
    "import tests.chat_server",
    "from tests.toy_learner import ToyLearner",
    "from tests import chat_server",
    "def f():\n    from aiohttp import web\n",
    "import aiohttp.web as web",
    "from ..testing.toy_learner import ToyLearner",  # relative, from rayscale/sync/x.py (the old place)
])
def test_checker_catches_forbidden_imports(tmp_path, source):
    """The checker itself: each of these, written into a production module, is caught."""
    fake_pkg = tmp_path / "rayscale"
    (fake_pkg / "sync").mkdir(parents=True)
    module = fake_pkg / "sync" / "x.py"
    module.write_text(source + "\n")
    assert any(_is_forbidden(name) for _, name in _imported_names(module, fake_pkg))


def test_checker_allows_lookalikes(tmp_path):
    fake_pkg = tmp_path / "rayscale"
    (fake_pkg / "sync").mkdir(parents=True)
    module = fake_pkg / "sync" / "x.py"
    module.write_text("import rayscale.testing_utils\nfrom rayscale.sync import buckets\nimport aiohttp_like\n")
    assert not any(_is_forbidden(name) for _, name in _imported_names(module, fake_pkg))


# ============================================================================ heavy dependencies stay out
# Pure logic imports no Ray (and mostly no torch): the verifier, the teacher's parsing, the data loaders run in the
# driver, in `rayscale verify` and in tests without them. Each module is imported in a fresh interpreter, since
# this process has long loaded everything. A module may only gain a heavy dependency inside a function, with a
# one-line reason on the import (the scan below).
HEAVY = ("ray", "torch", "vllm", "deepspeed")
NO_HEAVY = [  # none of HEAVY
    "rayscale.verify.extract", "rayscale.verify.normalize", "rayscale.verify.structure", "rayscale.verify.steps",
    "rayscale.verify.arith", "rayscale.verify.equivalence", "rayscale.verify.batch", "rayscale.verify.isolation",
    "rayscale.verify.child_process",
    "rayscale.teacher.parsers", "rayscale.teacher.prompting", "rayscale.teacher.records", "rayscale.teacher.teacher",
    "rayscale.teacher.local_backend",
    "rayscale.data.loaders", "rayscale.data.synthetic", "rayscale.data.cursor", "rayscale.data.problem",
    "rayscale.text", "rayscale.prompts", "rayscale.tracking", "rayscale.pretrained", "rayscale.metric_names",
    "rayscale.learner.deepspeed_config", "rayscale.rollout.scheduling", "rayscale.confidence",
    "rayscale.rollout.vllm_contract", "rayscale.rollout.vllm_sources",  # read a vLLM release, never import it
]
NO_RAY = [  # torch is theirs, Ray is their actor's (rayscale.actors.*); backends pulls in every engine module
    "rayscale.rollout.backends", "rayscale.rollout.vllm_extension",
    # the wire of weight sync: vLLM's worker processes load it, and they must not load Ray
    "rayscale.wire", "rayscale.wire.buckets", "rayscale.wire.group", "rayscale.wire.protocol",
    "rayscale.wire.receiver", "rayscale.wire.handover", "rayscale.wire.vllm_load",
    # the transports' capability checks run when a config loads: neither Ray nor torch until a half runs
    "rayscale.config", "rayscale.sync.transports",
]
NO_HEAVY += ["rayscale.config", "rayscale.sync.transports"]


# Run in the fresh interpreter: import the module, and say for each of HEAVY it loaded which rayscale line did it.
_PROBE = """
import importlib, json, sys, traceback
heavy, module, package, where = {heavy!r}, {module!r}, {package!r}, {{}}

class Spy:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name in heavy and name not in where:
            frames = [f for f in traceback.extract_stack() if f.filename.startswith(package)]
            where[name] = f"{{frames[-1].filename}}:{{frames[-1].lineno}}" if frames else "?"
        return None

sys.meta_path.insert(0, Spy)
importlib.import_module(module)
print(json.dumps({{m: where.get(m, "?") for m in heavy if m in sys.modules}}))
"""


def _heavy_loaded_by(module: str) -> dict[str, str]:
    """{dependency: the rayscale file:line that imported it} for each of HEAVY that importing `module` alone loads,
    in a fresh interpreter."""
    code = _PROBE.format(heavy=HEAVY, module=module, package=str(PACKAGE))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=PACKAGE.parent)
    assert done.returncode == 0, f"import {module} failed:\n{done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("module", "forbidden"), [(m, HEAVY) for m in NO_HEAVY] + [(m, ("ray",)) for m in NO_RAY],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_light_module_does_not_load_heavy_dependencies(module, forbidden):
    loaded = {m: at for m, at in _heavy_loaded_by(module).items() if m in forbidden}
    assert not loaded, (f"import {module} loads {', '.join(f'{m} (imported at {at})' for m, at in loaded.items())}: "
                        "move that import into the function that needs it (with a one-line `# why` comment), or the "
                        "function into a module that may load it")


def test_heavy_import_check_sees_ray():
    """The check itself: a module that does import Ray is caught, and the line that imported it named."""
    loaded = _heavy_loaded_by("rayscale.actors.verifier")
    assert "ray" in loaded and loaded["ray"].startswith(str(PACKAGE / "actors" / "verifier.py") + ":")


# Stricter for the code Ray actors only wrap: no Ray anywhere in it, not even inside a function (the Ray shells are
# rayscale/actors/*, and rayscale/cluster.py connects). `rayscale verify` ran Ray through verify/batch.py this way.
RAY_FREE = ["verify/*.py", "teacher/*.py", "data/*.py", "rollout/*.py", "wire/*.py", "text.py",
            "prompts.py", "tracking.py",
            "pretrained.py", "models.py", "run_setup.py", "learner/deepspeed_config.py"]
RAY_CODE = ("ray", "rayscale.actors", "rayscale.cluster")


def _ray_imports(path: Path, root: Path = PACKAGE) -> list[str]:
    return [f"line {line}: {name}" for line, name in _imported_names(path, root)
            if any(name == r or name.startswith(r + ".") for r in RAY_CODE)]


def _ray_free_modules() -> list[Path]:
    return sorted({p for pattern in RAY_FREE for p in PACKAGE.glob(pattern)})


@pytest.mark.parametrize("path", _ray_free_modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_ray_free_module_never_imports_ray(path):
    bad = _ray_imports(path)
    assert not bad, (f"{path.relative_to(PACKAGE.parent)} imports Ray code {bad}: put the Ray-using function in "
                     "rayscale/actors/ (or its caller) and pass what it makes in")


def test_ray_free_check_catches_a_lazy_actor_import(tmp_path):
    fake_pkg = tmp_path / "rayscale"
    (fake_pkg / "verify").mkdir(parents=True)
    module = fake_pkg / "verify" / "batch.py"
    module.write_text("def _backend():\n    from rayscale.actors.verifier import VerifierPool  # ray: only --ray\n"
                      "    from .. import cluster\n    import ray.util\n")
    assert [b.split(": ")[1] for b in _ray_imports(module, fake_pkg)] == [
        "rayscale.actors.verifier", "rayscale.actors.verifier.VerifierPool", "rayscale.cluster", "ray.util"]
    assert len(_ray_free_modules()) > 30


# ============================================================================ function-local imports
# An import inside a function is allowed only to keep a heavy or optional dependency (Ray, vLLM, torch, ...) out of
# a module that must not load it, or to break a real import cycle, and then says so on its own line:
#     import torch  # torch: only the HF backend needs it
# Files still being cleaned (their owners are on it): each entry is a path under rayscale/. Shrink this list.
LOCAL_IMPORTS_TO_CLEAN: set[str] = set()


def _local_imports_without_reason(path: Path) -> list[tuple[int, str]]:
    """(line, source line) of each import inside a function body with no `#` comment on its first line."""
    source = path.read_text()
    lines = source.splitlines()
    commented = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                 if tok.type == tokenize.COMMENT}
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)) and child.lineno not in commented:
                found.append((child.lineno, lines[child.lineno - 1].strip()))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(source, filename=str(path)), False)
    return found


def _all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_function_local_imports_say_why():
    offenders = {}
    for path in _all_modules():
        rel = path.relative_to(PACKAGE).as_posix()
        bad = _local_imports_without_reason(path)
        if bad and rel not in LOCAL_IMPORTS_TO_CLEAN:
            offenders[rel] = bad
    report = "\n".join(f"  rayscale/{rel}:{line}: {text}" for rel, bad in offenders.items() for line, text in bad)
    assert not offenders, ("function-local imports without a reason; hoist each to the top of its module, or keep it "
                           "(heavy/optional dependency kept out, or an import cycle) with a one-line `# why` "
                           f"comment on the import line:\n{report}")


def test_local_imports_to_clean_list_is_current():
    """An entry that is clean now (or gone) comes off LOCAL_IMPORTS_TO_CLEAN, so the list only shrinks."""
    stale = sorted(rel for rel in LOCAL_IMPORTS_TO_CLEAN
                   if not (PACKAGE / rel).is_file() or not _local_imports_without_reason(PACKAGE / rel))
    assert not stale, f"clean now, remove from LOCAL_IMPORTS_TO_CLEAN: {stale}"


@pytest.mark.parametrize(("source", "flagged"), [
    ("import os\n", []),
    ("try:\n    import resource\nexcept ImportError:\n    resource = None\n", []),
    ("def f():\n    import os\n", [2]),
    ("def f():\n    import torch  # torch: heavy\n", []),
    ("def f():\n    x = '#'; import os\n", [2]),  # a '#' in a string is no comment
    ("class A:\n    def m(self):\n        if True:\n            from a import b\n", [4]),
    ("async def f():\n    def g():\n        import a\n    import b  # why\n", [3]),
    ("def f():\n    from a import (  # why\n        b,\n    )\n    from c import (\n        d,  # not here\n    )\n", [5]),
])
def test_local_import_checker(tmp_path, source, flagged):
    module = tmp_path / "m.py"
    module.write_text(source)
    assert [line for line, _ in _local_imports_without_reason(module)] == flagged
