"""No two modules of the project import each other.

Every module of metaug_features, metaug_cli, metaug_training and metaug_release is parsed with
``ast`` (nothing is imported); each ``import`` / ``from ... import`` is resolved to the project
module it loads (relative imports against the importing module's package; ``from pkg import
name`` is the module ``pkg.name`` when that is a module, else ``pkg``). Imports anywhere in a
module count, **imports inside functions included**: a lazy import still ties the two modules
together (each needs the other to work, and a reader must hold both). Only imports under
``if TYPE_CHECKING:`` are left out, since they never run.

A pair A -> B -> A is reported by name; the fix is to move what both need into a third module
(or into the one that owns it) so the arrows point one way."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("metaug_features", "metaug_cli", "metaug_training", "metaug_release")


def module_name(path: Path) -> str:
    """``metaug_features/evaluation/knn.py`` -> ``metaug_features.evaluation.knn``; a package's
    ``__init__.py`` is the package itself."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    """Module name -> file, for every .py file of :data:`PACKAGES` (caches left out)."""
    return {module_name(f): f for pkg in PACKAGES for f in sorted((REPO / pkg).rglob("*.py"))
            if "__pycache__" not in f.parts}


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """True when ``node`` sits in the body of ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    child, cur = node, parents.get(node)
    while cur is not None:
        if isinstance(cur, ast.If) and child in cur.body:
            test = cur.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                return True
        child, cur = cur, parents.get(cur)
    return False


def _owning_module(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of the dotted ``name`` that is a project module (None: not ours)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in modules:
            return ".".join(parts[:i])
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``module`` (file ``path``) imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` loads the module pkg.mod; `from pkg import name` loads pkg.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            owner = _owning_module(target, modules)
            if owner is not None and owner != module:
                found.add(owner)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def mutual_pairs(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every (A, B) with A < B where A imports B and B imports A."""
    return sorted((a, b) for a, targets in graph.items() for b in targets if a < b and a in graph.get(b, ()))


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_no_two_modules_import_each_other(graph):
    pairs = mutual_pairs(graph)
    assert not pairs, "modules that import each other (move what both need into one of them or a third): " + \
        "; ".join(f"{a} <-> {b}" for a, b in pairs)


# ---------------------------------------------------------------------- the scanner itself
def _write(root: Path, rel: str, text: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


def test_the_scanner_resolves_relative_lazy_and_type_checking_imports(tmp_path, monkeypatch):
    """A toy package: a relative import, a lazy import inside a function (counts) and one under
    TYPE_CHECKING (does not) give exactly the expected pair."""
    this = sys.modules[__name__]
    monkeypatch.setattr(this, "REPO", tmp_path)
    monkeypatch.setattr(this, "PACKAGES", ("toy",))
    _write(tmp_path, "toy/__init__.py", "")
    _write(tmp_path, "toy/a.py", "from . import b\nfrom .sub import c\n")
    _write(tmp_path, "toy/b.py", "def f():\n    from toy.a import x  # lazy: counts\n")
    _write(tmp_path, "toy/sub/__init__.py", "")
    _write(tmp_path, "toy/sub/c.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import y\n"
                                     "from .. import b\n")
    graph = import_graph()
    assert graph["toy.a"] == {"toy.b", "toy.sub.c"}
    assert graph["toy.b"] == {"toy.a"} and graph["toy.sub.c"] == {"toy.b"}
    assert mutual_pairs(graph) == [("toy.a", "toy.b")]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_scanned(graph, package):
    """The scan sees each package's modules (a wrong root would find no pair because it read nothing)."""
    names = [m for m in graph if m == package or m.startswith(package + ".")]
    assert len(names) > 3, names
    assert any(graph[m] for m in names), f"{package}: no project import found"
