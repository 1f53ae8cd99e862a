"""The README's "Layout" section matches the tree: every path it names exists, every top-level
entry of the repository, every package folder and every module of the four packages is named
in it, and no source file is over the size a reader takes in at once. pyproject.toml installs
every package folder of the library, the CLI and training, and never the release tooling."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("metaug_features", "metaug_cli", "metaug_training", "metaug_release")
#: Packages the wheel installs; metaug_release/ is the checkout's release tooling and is not one.
INSTALLED = ("metaug_features", "metaug_cli", "metaug_training")
#: Packages whose modules their own top-level Layout line names (in its description column).
NAMED_BY_THEIR_LINE = ("metaug_cli", "metaug_release")
#: The longest source file the project keeps (issue #35): past this, a file has several jobs.
MAX_LINES = 450


def _layout_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```\n", 1)[1].split("```", 1)[0]


def _entries() -> list[tuple[str, list[str]]]:
    """(folder, names) per layout line group: top-level lines (no indent) set the folder; indented
    lines that start with a name list files or sub-folders of that folder."""
    entries: list[tuple[str, list[str]]] = []
    top = ""
    for line in _layout_block().splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            top = line.split()[0]
            entries.append(("", [top]))
        elif re.match(r"^  [A-Za-z_0-9]", line):
            # The names come before the description column (3+ spaces).
            names = re.findall(r"[A-Za-z_0-9]+(?:\.py|/)", line.strip().split("   ")[0])
            entries.append((top, names))
    return entries


def _named_paths() -> set[str]:
    return {f"{folder}{name}".rstrip("/") for folder, names in _entries() for name in names}


def test_every_path_the_layout_names_exists():
    missing = sorted(p for p in _named_paths() if not (REPO / p).exists())
    assert not missing, f"README Layout names paths that do not exist: {missing}"


def test_every_top_level_entry_is_in_the_layout():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, check=False, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    top_dirs = {p.split("/")[0] for p in tracked if "/" in p and not p.startswith(".")}
    assert top_dirs <= _named_paths(), sorted(top_dirs - _named_paths())


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_and_subpackage_is_in_the_layout(package):
    """A new module must be placed on the map a newcomer reads (its folder's group in the README)."""
    named = _named_paths()
    root = REPO / package
    expected = set()
    for f in root.rglob("*.py"):
        rel = f.relative_to(REPO).as_posix()
        if f.name == "__init__.py" or "__pycache__" in rel:
            continue
        parts = rel.split("/")
        # metaug_cli's commands and metaug_release's modules are named by their package's line
        # (test_package_lines_name_their_modules); modules of second-level packages by their
        # folder's line (test_second_level_package_lines_name_their_modules).
        if package in NAMED_BY_THEIR_LINE:
            expected.add(package)
        elif len(parts) > 2:
            expected.add("/".join(parts[:2]))
        else:
            expected.add(rel)
    assert expected <= named, f"not in README Layout: {sorted(expected - named)}"


def test_second_level_package_lines_name_their_modules():
    """config/, evaluation/ and encoders/ list their modules on their own line."""
    block = _layout_block()
    for sub in ("metaug_features/evaluation", "metaug_features/encoders", "metaug_training/config"):
        text = block.split(f"  {sub.split('/')[1]}/", 1)[1]
        text = re.split(r"\n  [A-Za-z_]|\n[A-Za-z]", text, maxsplit=1)[0]
        modules = {f.name for f in (REPO / sub).glob("*.py") if f.name != "__init__.py"}
        missing = sorted(m for m in modules if m not in text)
        assert not missing, f"{sub}: {missing} not named in its README Layout line"


def test_release_package_line_names_its_modules():
    """metaug_release/'s top-level line names every one of its modules (cli.py included)."""
    block = _layout_block()
    text = block.split("\nmetaug_release/", 1)[1]
    text = re.split(r"\n[A-Za-z]", text, maxsplit=1)[0]
    modules = {f.name for f in (REPO / "metaug_release").glob("*.py") if f.name not in ("__init__.py", "__main__.py")}
    missing = sorted(m for m in modules if m not in text)
    assert not missing, f"metaug_release: {missing} not named in its README Layout line"


def _pyproject_packages() -> list[str]:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    block = text.split("\npackages = [", 1)[1].split("]", 1)[0]
    return re.findall(r'"([\w.]+)"', block)


def test_pyproject_installs_every_package_folder_and_no_release_tooling():
    """A package folder (``__init__.py``) of the library, the CLI or training that pyproject.toml
    does not list would be missing from the wheel; the release tooling must never be listed, nor
    have a console script (it runs as ``python -m metaug_release`` from a checkout)."""
    listed = set(_pyproject_packages())
    on_disk = {f.parent.relative_to(REPO).as_posix().replace("/", ".") for pkg in INSTALLED
               for f in (REPO / pkg).rglob("__init__.py") if "__pycache__" not in f.parts}
    assert on_disk - listed == set(), f"package folders not in pyproject.toml's packages: {sorted(on_disk - listed)}"
    release = sorted(p for p in listed if p.startswith("metaug_release") or ".release" in p)
    assert not release, f"pyproject.toml installs release tooling: {release}"
    scripts = (REPO / "pyproject.toml").read_text(encoding="utf-8").split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    entries = re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', scripts, flags=re.MULTILINE)
    assert len(entries) > 5 and not [e for e in entries if "release" in " ".join(e)], entries


def test_no_source_file_is_over_the_limit():
    too_long = {}
    for f in [*REPO.glob("metaug_*/**/*.py"), *REPO.glob("tests/**/*.py"), *REPO.glob("benchmarks/*.py")]:
        n = len(f.read_text().splitlines())
        if n > MAX_LINES:
            too_long[f.relative_to(REPO).as_posix()] = n
    assert not too_long, f"files over {MAX_LINES} lines (split them by job): {too_long}"


def test_no_test_or_package_imports_a_benchmark_script():
    """benchmarks/ holds measurements; what tests and the packages use lives in the packages."""
    offenders = []
    for f in [*REPO.glob("tests/**/*.py"), *REPO.glob("metaug_*/**/*.py")]:
        text = f.read_text()
        if re.search(r"^\s*(from|import)\s+benchmarks\b|spec_from_file_location\(|sys\.path\.insert\(.*benchmarks",
                     text, flags=re.MULTILINE):
            offenders.append(f.relative_to(REPO).as_posix())
    assert not offenders, offenders
