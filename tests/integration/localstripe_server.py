"""Run ``localstripe`` (a stateful fake Stripe API) as a subprocess on a free loopback port."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.processes import free_port

TEST_API_KEY = "sk_test_localstripe"
_STARTUP_TIMEOUT_SECONDS = 20.0


def _answers(base_url: str) -> bool:
    request = urllib.request.Request(  # noqa: S310 - a fixed http://127.0.0.1 address
        f"{base_url}/v1/customers", headers={"Authorization": f"Bearer {TEST_API_KEY}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=1) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def running_localstripe() -> Iterator[str]:
    """Start localstripe from the running interpreter's environment and yield its base URL.

    ``--from-scratch`` keeps it from loading the state an earlier run left in /tmp/localstripe.pickle."""
    script = Path(__file__).with_name("localstripe_patched.py")  # localstripe with the list filter we read
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, str(script), "--port", str(port), "--from-scratch"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
            while not _answers(base_url):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    output = log.read().decode(errors="replace")
                    raise RuntimeError(f"localstripe did not start on port {port}:\n{output}")
                time.sleep(0.1)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
