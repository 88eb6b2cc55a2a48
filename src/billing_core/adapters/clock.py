"""Where "now" comes from: the system clock in AWS, a file-controlled clock on the local stack."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class OffsetFileClock:
    """The system clock shifted by an offset kept in a JSON file (``{"offset_seconds": ...}``), so the
    local runtime and every process of the local stack share one test clock that a command can move
    forward (``msp-billing clock advance``). Time keeps flowing; a missing file means no offset."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._cached: tuple[float, timedelta] | None = None  # (file mtime, offset)

    def offset(self) -> timedelta:
        try:
            mtime = self._path.stat().st_mtime
        except FileNotFoundError:
            return timedelta(0)
        if self._cached is None or self._cached[0] != mtime:
            seconds = float(json.loads(self._path.read_text() or "{}").get("offset_seconds", 0))
            self._cached = (mtime, timedelta(seconds=seconds))
        return self._cached[1]

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset()
