"""The one writer of generated sections: the text between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->`` in a Markdown file (README.md, benchmarks/RESULTS.md, benchmarks/CAMPAIGN.md).

Every tool that writes a section of a document calls :func:`write_section`; the file is
replaced atomically, and the text around the section is kept byte for byte."""

from __future__ import annotations

from pathlib import Path

from metaug_features.atomic import atomic_write_text
from metaug_features.errors import MetAugError


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of section ``name``."""
    if not name or any(c in name for c in "<>\n -"):
        raise ValueError(f"bad section name {name!r}: letters, digits and _ only")
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def section_block(body: str, name: str) -> str:
    """``body`` between the markers of ``name`` (no trailing newline after the end marker)."""
    start, end = markers(name)
    body = body.strip("\n")
    if start in body or end in body:
        raise ValueError(f"the body of section {name!r} must not contain its markers")
    return f"{start}\n{body}\n{end}"


def replace_section(doc: str, body: str, name: str, *, append: bool = True) -> str:
    """``doc`` with section ``name`` replaced by ``body``; a document without the section gets it
    appended after a blank line when ``append``, else it is an error. Markers in the wrong order
    or twice are an error (nothing is guessed)."""
    start, end = markers(name)
    block = section_block(body, name)
    i, j = doc.find(start), doc.find(end)
    if i < 0 and j < 0:
        if not append:
            raise MetAugError(f"the document lacks the markers {start} ... {end}: put them around the section")
        return doc.rstrip("\n") + "\n\n" + block + "\n"
    if i < 0 or j < i or doc.count(start) > 1 or doc.count(end) > 1:
        raise MetAugError(f"the markers of section {name!r} are broken (missing, twice or out of order)")
    return doc[:i] + block + doc[j + len(end):]


def write_section(path: Path, body: str, name: str, *, append: bool = True) -> Path:
    """Replace section ``name`` of the file ``path`` with ``body``, atomically (see
    :func:`replace_section`; a missing file starts as ``# Benchmark results``). Returns ``path``."""
    path = Path(path)
    doc = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    try:
        new = replace_section(doc, body, name, append=append)
    except MetAugError as e:
        raise MetAugError(f"{path}: {e}") from None
    if new != doc:
        atomic_write_text(path, new)
    return path


def read_section(path: Path, name: str) -> str | None:
    """The body of section ``name`` in ``path`` (without markers), or None when absent."""
    start, end = markers(name)
    doc = Path(path).read_text(encoding="utf-8")
    i, j = doc.find(start), doc.find(end)
    return doc[i + len(start):j].strip("\n") if 0 <= i < j else None
