"""``minik8s up``: one command to a working cluster on the embedded store.

Starts the apiserver on ``sqlite:<data-dir>/state.db``, writes ``<data-dir>/kubeconfig``
and prints how to use it, then starts the operators (and the proxy, where it can run) as
child processes pointed at that kubeconfig. Ctrl-C (or SIGTERM) stops everything.
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

from apiserver.main import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    bind,
    quiet_after_shutdown,
    run_event_loop,
    server_url,
    tune_gc,
)

logger = logging.getLogger(__name__)


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


def _start_component(name: str, kubeconfig: Path, log_dir: Path) -> subprocess.Popen[bytes]:
    log_path = log_dir / f"{name}.log"
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "minik8s", name],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    logger.info("started %s (pid %d), log %s", name, child.pid, log_path)
    return child


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        if child.poll() is None:
            child.kill()


def run(args: argparse.Namespace) -> int:
    tune_gc()  # first: fewer collections while the imports build the models, too
    from apiserver.app import ApiServer, create_app, server_config
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
    server = ApiServer(server_config(app, host, port))
    children: list[subprocess.Popen[bytes]] = []

    async def main() -> None:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        # uvicorn has no "started" event to await; poll its flag.
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if serving.done():
            await serving
            return
        print(f"minik8s apiserver: {url} (store {store_url})", flush=True)
        print(f"kubeconfig: {kubeconfig}", flush=True)
        print(f"  export KUBECONFIG={kubeconfig}    # or: kubectl --kubeconfig {kubeconfig} ...")
        print("  kubectl get namespaces", flush=True)
        if not args.no_operators and _has_module("operators.main"):
            children.append(_start_component("operators", kubeconfig, data_dir))
        if _proxy_wanted(args.proxy):
            children.append(_start_component("proxy", kubeconfig, data_dir))
        await serving

    quiet_after_shutdown()
    try:
        run_event_loop(main())
    except KeyboardInterrupt:
        pass
    finally:
        _stop(children)
    return 0
