"""The tests keep their own local state: the user's `.local/` (clock, data, demo output) is never read or
changed by a test session, and the CLI follows the state folder it is given."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from infra import LOCAL_STATE_DIR, PROJECT_ROOT, STATE_DIR_VARIABLE
from infra.local_clock import LocalClock
from infra.stack import DEFAULT_CLOCK_FILE, DEFAULT_DATA_DIR

MSP_BILLING = str(Path(sys.executable).parent / "msp-billing")


def test_the_test_session_has_a_state_folder_of_its_own() -> None:
    user_state = PROJECT_ROOT / ".local"
    assert Path(os.environ[STATE_DIR_VARIABLE]) == LOCAL_STATE_DIR
    assert user_state not in (LOCAL_STATE_DIR, *LOCAL_STATE_DIR.parents)
    assert DEFAULT_CLOCK_FILE.parent == LOCAL_STATE_DIR
    assert DEFAULT_DATA_DIR.parent == LOCAL_STATE_DIR


def test_the_cli_reads_the_clock_of_the_state_folder_it_is_given(tmp_path: Path) -> None:
    # A state folder whose clock a demo left months ahead, as `make up` does to `.local/`.
    LocalClock(tmp_path / "clock.json").set(datetime(2031, 5, 17, 12, 0, tzinfo=UTC))
    shown = subprocess.run(
        [MSP_BILLING, "clock", "show"],
        env={**os.environ, STATE_DIR_VARIABLE: str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert shown.stdout.startswith("2031-05-17 12:"), shown.stdout
    today = subprocess.run([MSP_BILLING, "clock", "show"], capture_output=True, text=True, check=True, timeout=60)
    assert today.stdout.startswith(f"{datetime.now(UTC):%Y-%m-%d}"), today.stdout
