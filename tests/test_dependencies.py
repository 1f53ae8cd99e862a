"""Every third-party module the package imports is a declared dependency (pyproject.toml).

The sources of the three installed packages (metaug_features/, metaug_cli/, metaug_training/) and
of the checkout's release tooling (metaug_release/, run from a checkout with the test extra) are parsed with
``ast``; every absolute import whose top-level module is neither the standard library nor one of
the project's own packages must map to a distribution in ``[project] dependencies``. A module
the code probes for (an import inside ``try: ... except ImportError``, e.g. umap-learn for
``metaug-eval plot --method umap``) is optional: it must be declared in an extra of
``[project.optional-dependencies]`` instead.

What only training needs (imported by metaug_training/, never by the library or the CLI) is the
``train`` extra, not a core dependency, and a training command without it says what to install.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("metaug_features", "metaug_cli", "metaug_training", "metaug_release")
OWN = {"metaug_features", "metaug_cli", "metaug_training", "metaug_release"}
#: Import name -> distribution name, where they differ.
DISTRIBUTION = {
    "yaml": "pyyaml",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "faiss": "faiss-cpu",
    "huggingface_hub": "huggingface-hub",
    "umap": "umap-learn",
    "skimage": "scikit-image",
}


def _normalise(dist: str) -> str:
    """PEP 503 name of a requirement string: ``"PyYAML>=6.0"`` -> ``"pyyaml"``."""
    name = re.split(r"[\s<>=!~;\[(]", dist.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """True when ``node`` sits in the body of a ``try`` that catches ImportError."""
    child, cur = node, parents.get(node)
    while cur is not None:
        if isinstance(cur, ast.Try) and child in cur.body:
            for h in cur.handlers:
                names = [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
                if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names):
                    return True
        child, cur = cur, parents.get(cur)
    return False


def third_party_imports(roots=SOURCES) -> dict[str, dict[str, object]]:
    """Top-level third-party module -> {"files": set of files, "optional": imported only as a
    probe somewhere (inside try/except ImportError)}."""
    std = set(sys.stdlib_module_names)
    out: dict[str, dict[str, object]] = {}
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in std or top in OWN:
                        continue
                    entry = out.setdefault(top, {"files": set(), "optional": False})
                    entry["files"].add(path.relative_to(REPO).as_posix())
                    if _guarded(node, parents):
                        entry["optional"] = True
    return out


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {_normalise(d) for d in project.get("dependencies", [])}
    extras = {_normalise(d) for deps in project.get("optional-dependencies", {}).values() for d in deps}
    return core, extras


def test_the_scan_finds_known_imports():
    """The scanner itself: it sees a plain import (yaml in the card renderer), a from-import
    (PIL), and flags the umap probe as optional."""
    found = third_party_imports()
    assert "metaug_training/model_card.py" in found["yaml"]["files"]
    assert "metaug_features/preprocess.py" in found["PIL"]["files"]
    assert found["umap"]["optional"] is True and found["torch"]["optional"] is False


def test_every_third_party_import_is_declared():
    core, extras = _declared()
    missing = []
    for module, info in sorted(third_party_imports().items()):
        dist = _normalise(DISTRIBUTION.get(module, module))
        allowed = core | extras if info["optional"] else core
        if dist not in allowed:
            where = "an extra of [project.optional-dependencies]" if info["optional"] else "[project] dependencies"
            missing.append(f"{module} (distribution {dist}, imported in {sorted(info['files'])[:3]}) is not in {where}")
    assert not missing, "\n".join(missing)


def test_dependencies_are_ranges():
    """Each declared dependency has a lower bound (a range, not a bare name or a pin)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    deps = list(project["dependencies"]) + [d for ds in project.get("optional-dependencies", {}).values() for d in ds]
    for d in deps:
        assert ">=" in d and "==" not in d, f"{d!r}: declare a range such as name>=X"


def _extras() -> dict[str, set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {name: {_normalise(d) for d in deps} for name, deps in project.get("optional-dependencies", {}).items()}


def test_training_only_dependencies_are_the_train_extra():
    """A module only metaug_training imports (PyYAML, for the card renderer) is in the ``train``
    extra and not a core dependency; the ``test`` extra carries it too, so CI and the README's
    set-up command install it."""
    library = set(third_party_imports(("metaug_features", "metaug_cli")))
    training_only = set(third_party_imports(("metaug_training",))) - library
    assert "yaml" in training_only  # the scan sees the card renderer's import
    core, _ = _declared()
    extras = _extras()
    for module in sorted(training_only):
        dist = _normalise(DISTRIBUTION.get(module, module))
        assert dist not in core, f"{dist} is only needed for training: move it to the train extra"
        assert dist in extras["train"] and dist in extras["test"], f"{dist} must be in the train and test extras"


def test_training_without_pyyaml_names_the_extra():
    """With PyYAML missing, the training package still imports and rendering a card is a one-line
    error that names the extra to install (``metaug-export --card-metrics`` exits 2 with it)."""
    code = (
        "import sys\n"
        "sys.modules['yaml'] = None  # as if PyYAML were not installed\n"
        "import metaug_training.model_card as mc\n"
        "from metaug_features import load_encoder\n"
        "from metaug_features.errors import MetAugError\n"
        "cfg = load_encoder('cifar10-conv').config\n"
        "try:\n"
        "    mc.render_card(cfg, [], recipe='cifar10-cmc', budget={}, hardware='x')\n"
        "except MetAugError as e:\n"
        "    print('ERROR', e)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert "ERROR rendering a model card needs PyYAML" in res.stdout and "metaug-features[train]" in res.stdout, res.stdout
