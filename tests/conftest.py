"""Every test session keeps the local stack's state (test clock, DynamoDB data, demo output) in a folder of
its own, never in the user's `.local/`: `make up` leaves the clock months ahead, and a test must neither
read that clock nor move it. Set before any test module imports `infra`; subprocesses inherit it."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

TEST_STATE_DIR = tempfile.mkdtemp(prefix="msp-billing-test-state-")
assert "infra" not in sys.modules, "infra was imported before the test state folder was set"
os.environ["MSP_BILLING_STATE_DIR"] = TEST_STATE_DIR


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(TEST_STATE_DIR, ignore_errors=True)
