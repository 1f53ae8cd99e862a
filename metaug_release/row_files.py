"""The record files of the campaign and the recipe study: one JSON row per line (``*.jsonl``),
and the plots drawn from those rows, each carrying the SHA-256 of its rows (PNG text chunk
``rows_sha256``) so a test can tell a stale plot from a current one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from metaug_features.atomic import atomic_write_text


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of ``path``, in file order (none when the file does not exist yet)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    """Write ``rows``, one JSON object per line, atomically."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def rows_sha256(rows: list[dict[str, Any]]) -> str:
    """The fingerprint a plot carries: SHA-256 of the rows' canonical JSON."""
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def save_plot(fig: Any, path: Path, rows: list[dict[str, Any]]) -> Path:
    """Save the matplotlib figure ``fig`` as the PNG ``path`` with :func:`rows_sha256` of ``rows``,
    atomically (temporary file + rename), and close it."""
    import matplotlib.pyplot as plt

    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, metadata={"rows_sha256": rows_sha256(rows)})
    plt.close(fig)
    tmp.replace(path)
    return path
