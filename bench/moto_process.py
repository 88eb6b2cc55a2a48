"""moto's server as its own process, for the charge benchmark's comparison (issue 28, item 1).

The local stack runs moto in its own process (``ThreadedMotoServer``), so every SQS request the emulator serves
holds the GIL the benchmark's workers need. Here it runs in a child process instead, with the same SQS patches
(``infra.moto_patches``), and the stack is otherwise unchanged: ``LocalStack.moto`` only needs start() and stop().
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

from infra.processes import terminate_with_parent, wait_until

ROOT = Path(__file__).resolve().parents[1]
SERVE = (
    "import sys; from infra.moto_patches import apply_sqs_patches; apply_sqs_patches(); "
    "from moto.server import main; main(['-H', '127.0.0.1', '-p', sys.argv[1]])"
)


class MotoProcess:
    def __init__(self, port: int) -> None:
        self._port = port
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(self._port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=terminate_with_parent,  # a server child dies with the benchmark
        )
        url = f"http://127.0.0.1:{self._port}/moto-api/"
        wait_until(lambda: urllib.request.urlopen(url, timeout=1).status == 200, "moto server process")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None
