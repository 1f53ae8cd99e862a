"""The code blocks of docs/EXTENDING.md, so that each recipe's test runs what the reader reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

EXTENDING = Path(__file__).resolve().parents[2] / "docs" / "EXTENDING.md"


def python_block(heading: str) -> str:
    """The first ```python block under the ``## <heading>`` section of docs/EXTENDING.md.

    Raises:
        LookupError: no such section, or the section has no python block (the message names it).
    """
    text = EXTENDING.read_text(encoding="utf-8")
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    sections = {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}
    if heading not in sections:
        raise LookupError(f"docs/EXTENDING.md has no section '## {heading}'; sections: {list(sections)}")
    block = re.search(r"^```python\n(.*?)^```", sections[heading], flags=re.MULTILINE | re.DOTALL)
    if block is None:
        raise LookupError(f"docs/EXTENDING.md section '## {heading}' has no ```python block")
    return block.group(1)


def add_recipe_rows(heading: str, table: dict, monkeypatch, expected: list[str]) -> dict[str, Any]:
    """Run the recipe's block (the test runs what the reader reads), check that its ``NEW_ROWS``
    are ``expected``, and add them to ``table`` for the calling test only. Returns the block's
    namespace (its functions and classes, ``NEW_ROWS`` among them)."""
    namespace: dict[str, Any] = {"__name__": f"recipe_{'_'.join(expected)}"}
    exec(compile(python_block(heading), str(EXTENDING), "exec"), namespace)  # noqa: S102 - the doc is the code under test
    rows = namespace["NEW_ROWS"]
    assert list(rows) == expected, f"docs/EXTENDING.md '## {heading}' adds {list(rows)}, expected {expected}"
    for name, row in rows.items():
        monkeypatch.setitem(table, name, row)
    return namespace
