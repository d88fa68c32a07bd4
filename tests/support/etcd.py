"""Start a real etcd (Debian's etcd-server) for tests: free loopback ports, data in a tmp dir.

``etcd_endpoint`` is a session fixture (``host:port``) to re-export from a conftest::

    from tests.support.etcd import etcd_endpoint  # noqa: F401

When the binary is absent the tests that need it are skipped with the reason; ``make test``
installs it (``apt-get install etcd-server``) when run as root, so CI never skips them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

START_TIMEOUT = 30.0


def etcd_binary() -> str | None:
    """The etcd server binary, or None when it is not installed."""
    found = shutil.which("etcd")
    if found:
        return found
    for candidate in ("/usr/bin/etcd", "/usr/local/bin/etcd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_etcd() -> str:
    """The etcd binary, or skip the test saying how to get it."""
    binary = etcd_binary()
    if binary is None:
        pytest.skip(
            "etcd is not installed: apt-get install etcd-server (make test does it as root)"
        )
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class EtcdServer:
    """One single-member etcd on loopback; ``start()`` again reuses its data and ports."""

    binary: str
    data_dir: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def start(self) -> None:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            self.binary,
            "--name=test",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=test={peer}",
            "--initial-cluster-state=new",
            "--quota-backend-bytes=8589934592",
            "--logger=zap",
            "--log-level=warn",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        url = f"http://{self.endpoint}/health"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"etcd exited with {self.process.returncode} while starting;"
                    f" see {self.log_path}:\n{self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    if b'"health":"true"' in response.read():
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd was not healthy within {START_TIMEOUT}s; see {self.log_path}")

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop this etcd (SIGTERM, then SIGKILL after 10 s); its data stays."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def start_etcd(data_dir: Path) -> EtcdServer:
    """A healthy etcd with its data in ``data_dir``; retried on a port taken meanwhile."""
    binary = require_etcd()
    last_error: RuntimeError | None = None
    for _attempt in range(3):
        server = EtcdServer(binary, data_dir)
        try:
            server.start()
            return server
        except RuntimeError as exc:
            last_error = exc
            shutil.rmtree(data_dir, ignore_errors=True)
    assert last_error is not None
    raise last_error


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One etcd for the whole session (tests keep apart by key prefix)."""
    server = start_etcd(tmp_path_factory.mktemp("etcd") / "data")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def etcd_endpoint(etcd_server: EtcdServer) -> str:
    """``127.0.0.1:PORT`` of the session's etcd."""
    return etcd_server.endpoint
