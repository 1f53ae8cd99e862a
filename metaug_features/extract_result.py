"""What an extraction or a merge reports back: :class:`ExtractSummary`, and the error of a
``strict`` run that skipped files (:class:`StrictModeError`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import MetAugError


class StrictModeError(MetAugError):
    """``strict=True`` and some files were skipped; ``.skipped`` lists (path, reason)."""

    def __init__(self, skipped: Sequence[tuple[str, str]], complete: bool = True, limit: int = 50) -> None:
        self.skipped = list(skipped)
        lines = [f"  {p}: {r}" for p, r in self.skipped[:limit]]
        if len(self.skipped) > limit:
            lines.append(f"  ... and {len(self.skipped) - limit} more")
        head = f"--strict: {len(self.skipped)} file(s) would be skipped" + ("" if complete else " (found before decoding; more may follow)")
        super().__init__(head + "; no output written:\n" + "\n".join(lines))


@dataclass
class ExtractSummary:
    """What an extraction (or a merge) did.

    Attributes:
        output: the feature folder.
        num_files: files considered by this run (this shard's files when sharded).
        num_rows: feature rows written.
        num_skipped: files that produced no row (listed in ``skipped``).
        dim: feature dimension D.
        layer: the feature layer.
        chunks_total / chunks_resumed / chunks_computed: chunk bookkeeping of this run
            (resumed = loaded from ``.partial``, computed = decoded and encoded now).
        already_complete: the output folder already held this exact extraction.
        seconds: wall time of the call.
    """

    output: Path
    num_files: int
    num_rows: int
    num_skipped: int
    dim: int
    layer: str | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    chunks_total: int = 0
    chunks_resumed: int = 0
    chunks_computed: int = 0
    already_complete: bool = False
    seconds: float = 0.0


__all__ = ["ExtractSummary", "StrictModeError"]
