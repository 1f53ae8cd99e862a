"""Replace one marked section of benchmarks/RESULTS.md (shared by the benchmark scripts that
write their own section): the text between ``start`` and ``end`` markers, markers included,
or appended at the end of the file when the markers are not there yet."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def replace_section(text: str, start: str, end: str, path: Path = RESULTS) -> None:
    """``text`` must begin with ``start`` and end with ``end``."""
    doc = path.read_text(encoding="utf-8")
    if start in doc:
        head, rest = doc.split(start, 1)
        doc = head + text + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(doc, encoding="utf-8")
