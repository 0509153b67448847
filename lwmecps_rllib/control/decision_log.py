"""The decision log: one JSON object per control period, one per line, flushed at once."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any


class DecisionLog:
    """Appends records to a JSON-lines file (or standard output).

    Each line is written and flushed whole, so a stop at any moment leaves complete lines.

    Args:
        path: The file (appended to; None: standard output).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._fh: IO[str] | None = None

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        if self._fh is None:
            self._fh = sys.stdout if self.path is None else self.path.open("a")
        self._fh.write(json.dumps(record, separators=(",", ":"), default=_plain) + "\n")
        self._fh.flush()

    def close(self) -> None:
        """Flush and close the file (standard output stays open)."""
        if self._fh is not None:
            self._fh.flush()
            if self._fh is not sys.stdout:
                self._fh.close()
            self._fh = None


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
