"""Fixtures for the conformance suites: every Storage backend, on real parts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from apiserver.storage.interface import Storage
from tests.support.etcd import EtcdServer, etcd_endpoint, etcd_server, start_etcd

__all__ = ["etcd_endpoint", "etcd_server"]

BACKENDS = ["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)]


@dataclass
class Backend:
    """Opens stores of one kind on one place, so a test can close and reopen it."""

    kind: str
    sqlite_path: Path | None = None
    etcd_endpoint: str = ""
    etcd_prefix: str = ""

    def open(self) -> Storage:
        if self.kind == "sqlite":
            from apiserver.storage.sqlite import SqliteStorage

            assert self.sqlite_path is not None
            return SqliteStorage(self.sqlite_path, compact_interval=0)
        from apiserver.storage.etcd import EtcdStorage

        return EtcdStorage([self.etcd_endpoint], prefix=self.etcd_prefix)


def _backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if kind == "sqlite":
        return Backend("sqlite", sqlite_path=tmp_path / "state.sqlite")
    endpoint: str = request.getfixturevalue("etcd_endpoint")
    return Backend("etcd", etcd_endpoint=endpoint, etcd_prefix=f"/t-{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Where a store of each kind lives for this test (a tmp file, or a fresh etcd prefix)."""
    return _backend(request.param, request, tmp_path)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Storage]:
    """A started store of each kind, closed after the test."""
    opened = backend.open()
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A private etcd for a test that restarts the server."""
    server = start_etcd(tmp_path / "etcd-data")
    try:
        yield server
    finally:
        server.stop()
