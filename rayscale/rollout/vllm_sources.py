"""Find a name in a vLLM release by reading its Python sources with `ast`, never importing them.

`rayscale.rollout.vllm_contract` checks the installed vLLM by importing it; this module lets the same contract be
checked against a release that cannot be imported here: the CUDA `vllm` wheel (read straight from the zip) on a
machine without CUDA, or any source tree. It follows what vLLM's own modules do to expose a name: `def`/`class`,
`from ... import` (relative too, and inside `if TYPE_CHECKING:`, which is how vLLM's lazy top-level names are
declared), `import a.b as c`, aliases (`X = Y`), subpackages, a module-level `__getattr__` that answers the name
(vLLM's `current_platform`), and, for attributes of a class, its body and then its bases in order.

`SourceTree(path).resolve(module, attr)` returns a `Definition` (raising ImportError/AttributeError like the
import-based resolver), and `parameters(definition)` is what it accepts by name, or None for anything (**kwargs,
or a name whose value the sources do not show).
"""

from __future__ import annotations

import ast
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# A class built from its annotated fields: a decorator with one of these words in its name (dataclass, pydantic's
# dataclass, vLLM's @config), or one of these bases anywhere above it.
_FIELD_DECORATORS = ("dataclass", "config")
_FIELD_BASES = {"Struct", "BaseModel", "TypedDict", "NamedTuple"}


@dataclass(frozen=True)
class Definition:
    """Where a name was found: a class, a function, a module, or a name the sources bind to a value (`node` None:
    it exists, what it accepts is unknown)."""

    module: str
    node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef | ast.Module | None


def _top_level(body: list[ast.stmt]):
    """Module-level statements, including those under `if`/`try`/`with` (not inside functions or classes)."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, ast.If):
            yield from _top_level(stmt.body)
            yield from _top_level(stmt.orelse)
        elif isinstance(stmt, ast.Try | getattr(ast, "TryStar", ast.Try)):
            yield from _top_level(stmt.body)
            for handler in stmt.handlers:
                yield from _top_level(handler.body)
            yield from _top_level(stmt.orelse)
            yield from _top_level(stmt.finalbody)
        elif isinstance(stmt, ast.With):
            yield from _top_level(stmt.body)


def _targets(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, ast.Assign):
        return [t.id for t in stmt.targets if isinstance(t, ast.Name)]
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return [stmt.target.id]
    return []


def _base_name(expr: ast.expr) -> str | None:
    """`A`, `mod.A` or `A[T]` -> the dotted name of the base class."""
    if isinstance(expr, ast.Subscript):
        return _base_name(expr.value)
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        head = _base_name(expr.value)
        return f"{head}.{expr.attr}" if head else None
    return None


def _decorator_name(expr: ast.expr) -> str:
    return (_base_name(expr.func if isinstance(expr, ast.Call) else expr) or "").rsplit(".", 1)[-1]


class SourceTree:
    """The Python sources of a vLLM release: a wheel (read from the zip) or a directory holding the `vllm`
    package (site-packages, an unpacked wheel, a checkout)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if path.is_file():
            zf = zipfile.ZipFile(path)
            names = set(zf.namelist())
            self._read = lambda rel: zf.read(rel).decode("utf-8") if rel in names else None
        elif path.is_dir():
            root = path.parent if (path / "__init__.py").is_file() and path.name == "vllm" else path
            self._read = lambda rel: (root / rel).read_text("utf-8") if (root / rel).is_file() else None
        else:
            raise FileNotFoundError(f"{path}: neither a wheel nor a directory of vLLM sources")
        self.path = path
        self._module = lru_cache(maxsize=None)(self._parse)

    def _parse(self, module: str) -> ast.Module | None:
        rel = module.replace(".", "/")
        for candidate in (f"{rel}/__init__.py", f"{rel}.py"):
            text = self._read(candidate)
            if text is not None:
                return ast.parse(text, filename=candidate)
        return None

    def _is_package(self, module: str) -> bool:
        return self._read(module.replace(".", "/") + "/__init__.py") is not None

    def module(self, module: str) -> ast.Module:
        tree = self._module(module)
        if tree is None:
            raise ImportError(f"no module {module} in {self.path}")
        return tree

    def version(self) -> str | None:
        """The release's version as its `vllm/version.py`/`_version.py` states it (None: not stated)."""
        for candidate in ("vllm/_version.py", "vllm/version.py"):
            text = self._read(candidate)
            for stmt in ast.parse(text).body if text else ():
                if "__version__" in _targets(stmt) and isinstance(stmt.value, ast.Constant):
                    return str(stmt.value.value)
        return None

    # -- finding names -------------------------------------------------------------------------------------

    def resolve(self, module: str, attr: str) -> Definition:
        """The definition of `module.attr` (attr dotted: `LLM.generate`); ImportError/AttributeError when the
        release lacks it."""
        head, *rest = attr.split(".")
        found = self._name_in_module(module, head, seen=set())
        for part in rest:
            found = self._member(found, part, seen=set())
        return found

    def _name_in_module(self, module: str, name: str, seen: set) -> Definition:
        if (module, name) in seen:  # an import cycle: not a definition
            raise AttributeError(f"{module}.{name}")
        seen.add((module, name))
        tree = self.module(module)
        found: Definition | None = None
        for stmt in _top_level(tree.body):  # the last binding wins, as at import time; definitions over values
            if isinstance(stmt, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and stmt.name == name:
                found = Definition(module, stmt)
            elif isinstance(stmt, ast.ImportFrom):
                for alias in stmt.names:
                    if (alias.asname or alias.name) == name:
                        try:
                            found = self._imported(module, stmt, alias.name, seen)
                        except (ImportError, AttributeError):  # one branch of a try/except import
                            pass
            elif isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    if alias.asname == name:
                        found = Definition(alias.name, self._module(alias.name))
            elif name in _targets(stmt) and (found is None or found.node is None):
                value = stmt.value
                if isinstance(value, ast.Name) and value.id != name:  # an alias: X = Y
                    found = self._name_in_module(module, value.id, seen)
                else:
                    found = Definition(module, None)
        if found is not None:
            return found
        sub = f"{module}.{name}"
        if self._module(sub) is not None:
            return Definition(sub, self._module(sub))
        if self._getattr_answers(tree, name):
            return Definition(module, None)
        raise AttributeError(f"{module}.{name}")

    def _imported(self, module: str, stmt: ast.ImportFrom, name: str, seen: set) -> Definition:
        if stmt.level:
            package = module if self._is_package(module) else module.rpartition(".")[0]
            for _ in range(stmt.level - 1):
                package = package.rpartition(".")[0]
            source = f"{package}.{stmt.module}" if stmt.module else package
        else:
            source = stmt.module or ""
        if not source.startswith("vllm"):  # from torch, typing, ...: exists, unknown shape
            return Definition(source, None)
        return self._name_in_module(source, name, seen)

    @staticmethod
    def _getattr_answers(tree: ast.Module, name: str) -> bool:
        """A module-level `__getattr__` that compares against or maps the name (vLLM's lazy attributes)."""
        for stmt in _top_level(tree.body):
            if isinstance(stmt, ast.FunctionDef) and stmt.name == "__getattr__":
                return any(isinstance(n, ast.Constant) and n.value == name for n in ast.walk(stmt))
        return False

    def _member(self, owner: Definition, name: str, seen: set) -> Definition:
        if isinstance(owner.node, ast.Module):
            return self._name_in_module(owner.module, name, seen=set())
        if not isinstance(owner.node, ast.ClassDef):
            raise AttributeError(f"{owner.module}: cannot look up {name} in something that is not a class")
        for cls_module, cls in self._mro(owner):
            found = None
            for stmt in cls.body:
                if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and stmt.name == name:
                    found = Definition(cls_module, stmt)  # the last def wins (an @overload's implementation)
                elif name in _targets(stmt) and found is None:
                    found = Definition(cls_module, None)
            if found is not None:
                return found
        raise AttributeError(f"{owner.module}.{owner.node.name}.{name}")

    def _mro(self, cls: Definition):
        """The class, then its vLLM-defined bases depth first (bases outside vLLM are not read)."""
        yield cls.module, cls.node
        for base in cls.node.bases:
            base_name = _base_name(base)
            if base_name is None:
                continue
            try:
                found = self.resolve(cls.module, base_name)
            except (ImportError, AttributeError):
                continue
            if isinstance(found.node, ast.ClassDef):
                yield from self._mro(found)

    def _base_names(self, cls: Definition) -> set[str]:
        names = set()
        for _, node in self._mro(cls):
            names.update(filter(None, (_base_name(b) for b in node.bases)))
        return {n.rsplit(".", 1)[-1] for n in names}

    # -- what a definition accepts ----------------------------------------------------------------------------

    def parameters(self, found: Definition) -> set[str] | None:
        """The names `found` accepts: a function's parameters, a field-built class's fields (dataclass, msgspec,
        pydantic, TypedDict), another class's `__init__`'s. None: anything (**kwargs) or not known."""
        node = found.node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            if args.kwarg is not None:
                return None
            return {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}
        if not isinstance(node, ast.ClassDef):
            return None
        field_built = (any(word in _decorator_name(d).lower() for d in node.decorator_list
                           for word in _FIELD_DECORATORS) or bool(self._base_names(found) & _FIELD_BASES))
        if not field_built:
            try:
                init = self._member(found, "__init__", seen=set())
            except AttributeError:  # no __init__ of its own or from a vLLM base: built from its fields
                pass
            else:
                accepted = self.parameters(init)
                if accepted is not None and isinstance(init.node, ast.FunctionDef):
                    first = (*init.node.args.posonlyargs, *init.node.args.args)[:1]
                    accepted -= {a.arg for a in first}  # `self`: calling the class passes it, as inspect says
                return accepted
        fields: set[str] = set()
        for _, cls in self._mro(found):
            for stmt in cls.body:
                if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                        and "ClassVar" not in ast.unparse(stmt.annotation)):
                    fields.add(stmt.target.id)
        return fields
