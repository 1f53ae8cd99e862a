"""The method documentation lives in the repository (docs/METHODS.md) and every citation of it
points to a section that exists; no citation of the old, external specification remains outside
the historical records.

Citations look like "docs/METHODS.md section 7", "docs/METHODS.md sections 8-9",
"docs/METHODS.md section 3(a)", "docs/METHODS.md section 6, step 2" or "docs/METHODS.md
section 4.1" (a sub-section heading "### 4.1 ...").
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
METHODS = REPO / "docs" / "METHODS.md"
#: The old specification's name, assembled so that this file does not cite it itself.
OLD_NAME = "S" + "PEC"
#: Historical records and measured outputs, kept byte-for-byte as they were produced: the first
#: release's record, and the paper-probe reports whose protocol strings were written by the run.
HISTORICAL = ("benchmarks/release/", "benchmarks/campaign/paper-probe-")
TEXT_SUFFIXES = {".py", ".md", ".json", ".sh", ".toml", ".txt", ".cfg", ".yaml", ".yml", ".jsonl"}

CITATION = re.compile(
    r"docs/METHODS\.md`?,?\s+(?P<word>sections?)\s+(?P<first>\d+(?:\.\d+)?)(?:\((?P<item>[a-z])\))?"
    r"(?:(?:-|\s+and\s+)(?P<last>\d+))?(?:,\s+step\s+(?P<step>\d+))?")


def repo_text_files() -> list[str]:
    """Tracked and untracked-but-not-ignored text files (relative paths)."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split("\n")
        files = [f for f in out if f]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an sdist)
        files = [os.path.relpath(os.path.join(d, f), REPO) for d, dirs, fs in os.walk(REPO)
                 for f in fs if not any(p.startswith(".") or p in ("runs", "__pycache__") or p.endswith(".egg-info")
                                        for p in Path(os.path.relpath(d, REPO)).parts)]
    return sorted(f for f in files if Path(f).suffix in TEXT_SUFFIXES and (REPO / f).is_file())


def sections() -> tuple[dict[str, str], dict[str, set[str]], dict[str, set[str]]]:
    """(number -> title for "## N." and "### N.M" headings, section -> its "(x)" items, section ->
    its numbered steps)."""
    titles: dict[str, str] = {}
    items: dict[str, set[str]] = {}
    steps: dict[str, set[str]] = {}
    current = None
    for line in METHODS.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^(##|###) (\d+(?:\.\d+)?)\.? (.+)$", line)
        if m:
            titles[m.group(2)] = m.group(3)
            if m.group(1) == "##":
                current = m.group(2)
            continue
        if current is None:
            continue
        for it in re.findall(r"\*\*\(([a-z])\)", line):
            items.setdefault(current, set()).add(it)
        st = re.match(r"^(\d+)\. ", line)
        if st:
            steps.setdefault(current, set()).add(st.group(1))
    return titles, items, steps


def citations() -> list[tuple[str, int, re.Match]]:
    out = []
    for f in repo_text_files():
        if f == "tests/test_docs_citations.py":  # its deliberate wrong examples
            continue
        text = (REPO / f).read_text(encoding="utf-8", errors="replace")
        for m in CITATION.finditer(text):
            out.append((f, text.count("\n", 0, m.start()) + 1, m))
    return out


def test_methods_doc_has_the_eleven_numbered_sections():
    """Sections 1-11, in order, each with a title: the numbering the code has always cited (11,
    the official code against the paper, was added last)."""
    titles, items, steps = sections()
    top = [n for n in titles if "." not in n]
    assert top == [str(i) for i in range(1, 12)], top
    expected = {"1": "Views", "2": "Encoders", "3": "Memory bank", "4": "Losses", "5": "MAG", "6": "MetAug iteration",
                "7": "Linear-probe", "8": "IDAA", "9": "A2", "10": "Compute",
                "11": "official code against the paper"}
    for n, word in expected.items():
        assert word.lower() in titles[n].lower(), (n, titles[n])
    assert items.get("3") == {"a", "b"} and {"1", "2", "3", "4"} <= steps["6"]


def test_every_citation_points_to_an_existing_section():
    titles, items, steps = sections()
    found = citations()
    assert len(found) > 50, "the scan found too few citations: is the pattern still right?"
    bad = []
    for f, line, m in found:
        first, last, item, step = m.group("first"), m.group("last"), m.group("item"), m.group("step")
        numbers = [first] + ([str(n) for n in range(int(first) + 1, int(last) + 1)] if last else [])
        where = f"{f}:{line}: {m.group(0)!r}"
        if any(n not in titles for n in numbers):
            bad.append(f"{where}: no section {', '.join(n for n in numbers if n not in titles)}")
        elif item and item not in items.get(first, set()):
            bad.append(f"{where}: section {first} has no item ({item})")
        elif step and step not in steps.get(last or first, set()):  # "sections 5 and 6, step 2": of 6
            bad.append(f"{where}: section {last or first} has no step {step}")
        elif last and int(last) <= int(float(first)):
            bad.append(f"{where}: empty range")
    assert not bad, "\n".join(bad)


def test_the_citation_check_catches_a_wrong_section(tmp_path):
    """The checker is not vacuous: a citation of a missing section or item is reported."""
    titles, items, _ = sections()
    for text, ok in (("docs/METHODS.md section 12", False), ("docs/METHODS.md section 3(c)", False),
                     ("docs/METHODS.md sections 8-9", True), ("`docs/METHODS.md` section 7.3", True),
                     ("docs/METHODS.md section 4.9", False)):
        m = CITATION.search(text)
        assert m is not None, text
        first, item, last = m.group("first"), m.group("item"), m.group("last")
        numbers = [first] + ([str(n) for n in range(int(first) + 1, int(last) + 1)] if last else [])
        good = all(n in titles for n in numbers) and (not item or item in items.get(first, set()))
        assert good is ok, text


def test_no_citation_of_the_old_external_specification_remains():
    pattern = re.compile(rf"\b{OLD_NAME}\b")
    left = []
    for f in repo_text_files():
        if f.startswith(HISTORICAL) or f == "tests/test_docs_citations.py":
            continue
        for i, line in enumerate((REPO / f).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if pattern.search(line):
                left.append(f"{f}:{i}: {line.strip()[:120]}")
    assert not left, "cite docs/METHODS.md instead:\n" + "\n".join(left)


@pytest.mark.parametrize("path", ["README.md", "metaug_training/config/__init__.py", "metaug_training/losses.py"])
def test_the_main_entry_points_cite_the_in_repo_doc(path):
    assert "docs/METHODS.md" in (REPO / path).read_text(encoding="utf-8")
