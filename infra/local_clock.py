"""The local test clock: one file every process of the local stack reads (billing_core's
``OffsetFileClock``) and only the local runtime writes. It holds the offset from the system clock and how
far the schedules have been fired, and a lock file serialises everyone who fires schedules."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from billing_core.adapters.clock import OffsetFileClock
from billing_core.domain.calendar import parse_iso, to_iso


class ClockError(ValueError):
    pass


class LocalClock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader = OffsetFileClock(path)

    def now(self) -> datetime:
        return self._reader.now()

    def _state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return {}
        return state if isinstance(state, dict) else {}

    def _write(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(temporary, self.path)  # readers see the old or the new file, never half of one

    def set(self, moment: datetime) -> None:
        """Move local time to ``moment`` (from now on it flows on from there). Never backwards: schedules
        already fired would fire again and invoices would predate their own payments."""
        if moment.tzinfo is None:
            raise ClockError("give the time in UTC")
        if moment < self.now():
            raise ClockError(f"the local clock is at {to_iso(self.now())}; it only moves forward")
        state = self._state()
        state["offset_seconds"] = (moment - datetime.now(UTC)).total_seconds()
        state["local_time_when_set"] = to_iso(moment)
        self._write(state)

    def fired_through(self) -> datetime:
        """Schedules due at or before this moment have fired. Starts at the first look (nothing older
        than the local stack's first start fires)."""
        recorded = self._state().get("fired_through")
        if recorded:
            return parse_iso(recorded)
        now = self.now()
        self.mark_fired_through(now)
        return now

    def mark_fired_through(self, moment: datetime) -> None:
        state = self._state()
        state["fired_through"] = to_iso(moment)
        self._write(state)

    @contextmanager
    def exclusive(self, *, wait: bool = True) -> Iterator[bool]:
        """Hold the firing lock (across processes). With ``wait=False`` yields False if it is taken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.with_suffix(".lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
