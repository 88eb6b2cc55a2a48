"""Small helpers for the local stack's processes: prerequisites, free ports, readiness."""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable


class LocalStackError(RuntimeError):
    """A problem the user can fix (missing tool, port taken); shown without a traceback."""


def require_tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise LocalStackError(f"`{name}` was not found on PATH; it is needed {why}.")
    return path


_PR_SET_PDEATHSIG = 1
# Loaded in the parent: between fork and exec the child should only call, not load a library.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def terminate_with_parent() -> None:
    """``preexec_fn`` of a server child: the kernel sends it SIGTERM when the process that started it dies,
    however it dies (a killed test, a crashed CLI), so no DynamoDB Local is ever left holding a port.
    Linux only (prctl); elsewhere a no-op. The signal follows the starting *thread*: start children from
    a thread that lives as long as the stack (the main thread does)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def require_free_port(port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers themselves do: connections of a just-stopped server (TIME_WAIT) don't count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise LocalStackError(
                f"port {port} on 127.0.0.1 is already in use, so {what} cannot start there; "
                f"stop whatever uses it or choose another port (see --help)."
            ) from None


# Ports handed out by this process: the OS may offer a just-released ephemeral port again, and
# two servers told the same port (DynamoDB Local and moto once were) means one never starts.
_handed_out_ports: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now and never returned before by this process."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _handed_out_ports:
            _handed_out_ports.add(port)
            return port


def wait_until(ready: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except LocalStackError:
            raise
        except Exception:  # noqa: S110 - not ready yet, keep polling until the deadline
            pass
        time.sleep(0.1)
    raise LocalStackError(f"{what} did not become ready within {timeout_s:.0f}s")
