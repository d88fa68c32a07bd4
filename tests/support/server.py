"""A real apiserver for tests: uvicorn on 127.0.0.1:0 in a background thread.

    with running_apiserver() as api:          # a fresh SQLite store in a temp dir
        subprocess.run(["kubectl", "--kubeconfig", str(api.kubeconfig), "get", "svc"])
        httpx.get(f"{api.url}/version")

or, in a test module, the ``apiserver`` fixture (``from tests.support.server import
apiserver``). The server has its own event loop in its own thread, so synchronous
clients (kubectl, the kubernetes client) and async tests can both use it. Stopping it
ends open watches and waits for the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from apiserver.app import ApiServer, create_app, server_config
from apiserver.main import bind, server_url
from apiserver.storage.factory import open_storage
from minik8s.config import write_kubeconfig

START_TIMEOUT_S = 15.0


@dataclass
class RunningApiserver:
    url: str
    kubeconfig: Path
    store_url: str
    app: Starlette
    data_dir: Path
    loop: asyncio.AbstractEventLoop = field(repr=False)
    server: ApiServer = field(repr=False)
    thread: threading.Thread = field(repr=False)

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's loop (e.g. to touch its storage) and wait."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(5)
            raise RuntimeError("the test apiserver did not stop; an open watch may hang it")


@contextlib.contextmanager
def running_apiserver(
    store_url: str | None = None,
    *,
    data_dir: Path | None = None,
    **app_options: Any,
) -> Iterator[RunningApiserver]:
    """Start an apiserver (default store: SQLite in a temp dir) and stop it on exit."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="minik8s-")))
        store_url = store_url or f"sqlite:{data_dir / 'state.db'}"
        app = create_app(open_storage(store_url), **app_options)
        sock = bind("127.0.0.1", 0)
        url = server_url(sock)
        server = ApiServer(server_config(app, "127.0.0.1", sock.getsockname()[1]))
        loop = asyncio.new_event_loop()
        failure: list[BaseException] = []

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(server.serve(sockets=[sock]))
            except BaseException as exc:  # reported to the test thread below
                failure.append(exc)
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=main, name="test-apiserver", daemon=True)
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if failure or not thread.is_alive():
                raise RuntimeError(f"the test apiserver failed to start: {failure!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("the test apiserver did not start within 15 s")
            time.sleep(0.005)
        kubeconfig = write_kubeconfig(data_dir / "kubeconfig", url)
        running = RunningApiserver(url, kubeconfig, store_url, app, data_dir, loop, server, thread)
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture
def apiserver() -> Iterator[RunningApiserver]:
    """A fresh apiserver on a fresh SQLite store, per test."""
    with running_apiserver() as api:
        yield api


@pytest.fixture(scope="module")
def shared_apiserver() -> Iterator[RunningApiserver]:
    """One apiserver for a whole test module (tests must use distinct names)."""
    with running_apiserver() as api:
        yield api
