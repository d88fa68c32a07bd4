"""``minik8s apiserver``: the Kubernetes REST and watch API on a chosen store."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the server's coroutine on uvloop when installed (uvicorn's own choice), else asyncio.

    uvloop roughly halves the cost of the hand-off to the SQLite writer thread and of socket I/O.
    """
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def default_store(data_dir: Path | None = None) -> str:
    from minik8s.config import DEFAULT_KUBECONFIG

    base = data_dir if data_dir is not None else DEFAULT_KUBECONFIG.parent
    return f"sqlite:{base / 'state.db'}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to listen on; 0 picks a free one"
    )
    parser.add_argument(
        "--store",
        default=None,
        help="sqlite:PATH (default ~/.minik8s/state.db) or etcd://HOST:PORT[,HOST:PORT...]",
    )
    parser.add_argument(
        "--kubeconfig-out",
        default=None,
        help="also write a kubeconfig pointing at this server to this path",
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), so the real port is known before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP;
    # without it a response written in two segments waits ~40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port (0 = any free)"
        ) from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def server_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(store_url: str, sock: socket.socket) -> None:
    from apiserver.app import ApiServer, create_app, server_config
    from apiserver.storage.factory import open_storage

    app = create_app(open_storage(store_url))
    host, port = sock.getsockname()[:2]
    server = ApiServer(server_config(app, host, port))
    await server.serve(sockets=[sock])


def run(args: argparse.Namespace) -> int:
    tune_gc()  # first: fewer collections while the imports build the models, too
    from apiserver.storage.factory import StoreUrlError, open_storage

    store_url = args.store or default_store()
    try:
        open_storage(store_url)
    except StoreUrlError as exc:
        logger.error("%s", exc)
        return 2
    sock = bind(args.host, args.port)
    url = server_url(sock)
    if args.kubeconfig_out:
        from minik8s.config import write_kubeconfig

        written = write_kubeconfig(args.kubeconfig_out, url)
        logger.info("wrote kubeconfig %s", written)
    logger.info("apiserver serving %s on store %s", url, store_url)
    quiet_after_shutdown()
    try:
        run_event_loop(serve(store_url, sock))
    except KeyboardInterrupt:
        pass
    return 0


GC_THRESHOLDS = (50_000, 20, 20)
"""The collector's thresholds in a serving process. With the defaults (700, 10, 10) a
Table of 10,000 cached objects (~100,000 new containers) set off full collections that
walk every cached object: +150-250 ms on one list in three. Reference counting frees
what the API allocates (JSON-shaped values have no cycles); the collector is for the rest."""


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def quiet_after_shutdown() -> None:
    """Exit 0 on SIGTERM: uvicorn handles the signal (a clean shutdown), then re-raises it
    into the handler it found, which would otherwise kill the process with -15."""
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
