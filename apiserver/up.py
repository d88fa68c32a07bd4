"""``minik8s up``: one command to a working cluster on the embedded store.

Starts the apiserver on ``sqlite:<data-dir>/state.db``, writes ``<data-dir>/kubeconfig``,
starts the operators (and the proxy, where it can run) as child processes pointed at that
kubeconfig, and prints how to use it once the operators say they are ready (their webhook
registered: from then on a Service has its ClusterIP in the create's response).

Ctrl-C (or SIGTERM) stops everything: the components first, while the API still serves
them (the operators take their webhook out of the admission configuration on the way
out), then the apiserver; a component that has not stopped within ``STOP_GRACE_S`` is
killed, and a second Ctrl-C stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from apiserver.main import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    bind,
    quiet_after_shutdown,
    run_event_loop,
    server_url,
    tune_gc,
)

if TYPE_CHECKING:  # imported by run(), after tune_gc(): the import is most of the startup
    import uvicorn

logger = logging.getLogger(__name__)

STOP_GRACE_S = 10.0  # how long the components get to stop before they are killed
OPERATORS_READY_S = 30.0  # how long the kubeconfig banner waits for the operators


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the store and the kubeconfig live (default ~/.minik8s)",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to listen on; 0 picks a free one"
    )
    parser.add_argument("--no-operators", action="store_true", help="do not start the operators")
    parser.add_argument(
        "--proxy",
        choices=("auto", "on", "off"),
        default="auto",
        help="start the IPVS proxy: auto = when root and the kernel has IPVS (%(default)s)",
    )


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        return Path(args.data_dir).expanduser()
    from minik8s.config import DEFAULT_KUBECONFIG

    return DEFAULT_KUBECONFIG.parent


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _proxy_wanted(mode: str) -> bool:
    if mode == "off" or not _has_module("proxy.main"):
        return False
    if mode == "on":
        return True
    return os.geteuid() == 0 and Path("/proc/net/ip_vs").exists()


def _start_component(
    name: str, kubeconfig: Path, log_dir: Path, *args: str
) -> subprocess.Popen[bytes]:
    log_path = log_dir / f"{name}.log"
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "minik8s", name, *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    logger.info("started %s (pid %d), log %s", name, child.pid, log_path)
    return child


def _stop(children: list[subprocess.Popen[bytes]], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM every child, wait up to ``grace`` seconds, then SIGKILL what is left; a
    second Ctrl-C while waiting still kills them (no child outlives ``minik8s up``)."""
    try:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        for child in children:
            if child.poll() is None:
                logger.warning("pid %d did not stop within %.0fs; killed", child.pid, grace)
                child.kill()
                child.wait()


def _server(config: uvicorn.Config, children: list[subprocess.Popen[bytes]]) -> uvicorn.Server:
    from apiserver.app import ApiServer

    class UpServer(ApiServer):
        """The apiserver of ``minik8s up``: on Ctrl-C or SIGTERM it stops the components first,
        while the API still serves them (the operators take their webhooks out of the
        admission configurations on the way out), and only then shuts itself down. A second
        signal shuts down at once."""

        def __init__(self, config: uvicorn.Config, children: list[subprocess.Popen[bytes]]) -> None:
            super().__init__(config)
            self.children = children
            self.stop_requested = False

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            running = [child for child in self.children if child.poll() is None]
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if self.stop_requested or not running or loop is None:
                super().handle_exit(sig, frame)
                return
            self.stop_requested = True
            logger.info("stopping %d component(s) before the apiserver", len(running))
            loop.call_soon_threadsafe(self._stop_children_then_exit, loop, sig)

        def _stop_children_then_exit(self, loop: asyncio.AbstractEventLoop, sig: int) -> None:
            stopping = loop.run_in_executor(None, _stop, self.children)
            stopping.add_done_callback(lambda _: super(UpServer, self).handle_exit(sig, None))

    return UpServer(config, children)


async def _operators_ready(
    operators: subprocess.Popen[bytes], ready_file: Path, log: Path, serving: asyncio.Task[None]
) -> None:
    """Wait until the operators write ``ready_file``; warn (and go on) if they exit or do
    not within OPERATORS_READY_S."""
    deadline = time.monotonic() + OPERATORS_READY_S
    while not await asyncio.to_thread(ready_file.exists):
        if serving.done():  # shutting down (Ctrl-C while waiting): nothing to announce
            return
        if operators.poll() is not None:
            logger.warning("the operators exited (%d); see %s", operators.returncode, log)
            return
        if time.monotonic() > deadline:
            logger.warning(
                "the operators are not ready after %.0f s (see %s): Services get their"
                " ClusterIP once they are",
                OPERATORS_READY_S,
                log,
            )
            return
        await asyncio.sleep(0.05)


def run(args: argparse.Namespace) -> int:
    tune_gc()  # first: fewer collections while the imports build the models, too
    from apiserver.app import create_app, server_config
    from apiserver.storage.factory import open_storage
    from minik8s.config import write_kubeconfig

    data_dir = _data_dir(args)
    data_dir.mkdir(parents=True, exist_ok=True)
    store_url = f"sqlite:{data_dir / 'state.db'}"
    sock = bind(args.host, args.port)
    url = server_url(sock)
    kubeconfig = write_kubeconfig(data_dir / "kubeconfig", url)
    app = create_app(open_storage(store_url))
    host, port = sock.getsockname()[:2]
    children: list[subprocess.Popen[bytes]] = []
    server = _server(server_config(app, host, port), children)

    async def main() -> None:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        # uvicorn has no "started" event to await; poll its flag.
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if serving.done():
            await serving
            return
        print(f"minik8s apiserver: {url} (store {store_url})", flush=True)
        operators = None
        if not args.no_operators and _has_module("operators.main"):
            ready_file = data_dir / "operators.ready"
            ready_file.unlink(missing_ok=True)
            operators = _start_component(
                "operators", kubeconfig, data_dir, "--ready-file", str(ready_file)
            )
            children.append(operators)
        if _proxy_wanted(args.proxy):
            children.append(_start_component("proxy", kubeconfig, data_dir))
        if operators is not None:
            # Announced once a Service gets its ClusterIP in the create's response, as on
            # any Kubernetes: before the operators' webhook is registered, it gets one
            # only a moment after it is stored.
            await _operators_ready(operators, ready_file, data_dir / "operators.log", serving)
        if not serving.done():
            print(f"kubeconfig: {kubeconfig}", flush=True)
            print(
                f"  export KUBECONFIG={kubeconfig}    # or: kubectl --kubeconfig {kubeconfig} ..."
            )
            print("  kubectl get namespaces", flush=True)
        await serving

    quiet_after_shutdown()
    try:
        run_event_loop(main())
    except KeyboardInterrupt:
        pass
    finally:
        _stop(children)
    return 0
