"""The ASGI app: storage -> registry -> routes, and a uvicorn Server that ends watches.

``create_app(storage)`` wires one apiserver around a store (not yet started: the app's
lifespan starts it, bootstraps the ``default`` and ``kube-system`` namespaces, and closes
it). :class:`ApiApp` is Starlette serving the route table, with resource URLs dispatched
before Starlette's middleware and routing. :class:`ApiServer` is uvicorn's Server with one
change: on shutdown it ends every open watch *before* waiting for connections to drain,
since a watch never ends by itself.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from apiserver import handlers
from apiserver.admission_seam import Admission
from apiserver.extensions import Extensions
from apiserver.handlers import ApiState
from apiserver.metrics import Metrics
from apiserver.registry import Registry
from apiserver.request import ApiRequest
from apiserver.resources import ResourceIndex, builtin_index
from apiserver.routes import resource_params, routes
from apiserver.storage.interface import Storage

logger = logging.getLogger(__name__)


class ApiApp(Starlette):
    """Starlette with the resource routes dispatched first, by ``routes.resource_params``.

    Every request to a resource URL (create, get, list, watch...) goes straight to
    ``handlers.resource_endpoint``: Starlette's two exception middlewares, its route
    regexes and its Request cost more than the registry's whole create. The endpoint turns
    every exception into a Status itself, so they had nothing to catch. What the split
    does not match (discovery, a trailing slash, an unknown method) Starlette routes as
    before, with the same route table.
    """

    api: ApiState

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            params = resource_params(scope["method"], scope["path"])
            if params is not None:
                scope["app"] = self
                request = ApiRequest(scope, receive, params, self.api)
                response = await handlers.resource_endpoint(request)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    storage: Storage,
    *,
    index: ResourceIndex | None = None,
    admission: Admission | None = None,
    bookmark_interval: float = handlers.BOOKMARK_INTERVAL_S,
) -> ApiApp:
    index = index if index is not None else builtin_index()
    registry = Registry(storage, index, admission=admission)
    extensions = Extensions(registry)  # CRDs and admission webhooks
    state = ApiState(registry, index, Metrics(), bookmark_interval=bookmark_interval)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await storage.start()
        await registry.bootstrap()
        await extensions.start()
        state.ready = True
        logger.info("apiserver ready: %d resources served", len(index))
        try:
            yield
        finally:
            state.ready = False
            state.stop_watches()
            await extensions.close()
            await registry.close()
            await storage.close()

    app = ApiApp(
        routes=routes(),
        lifespan=lifespan,
        exception_handlers={404: handlers.not_found, 405: handlers.method_not_allowed},
    )
    app.state.api = app.api = state
    return app


def api_state(app: Starlette) -> ApiState:
    state: ApiState = app.state.api
    return state


class ApiServer(uvicorn.Server):
    """uvicorn's Server, ending open watches first so that shutdown does not hang."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = self.config.app
        state = getattr(getattr(app, "state", None), "api", None)
        if isinstance(state, ApiState):
            state.stop_watches()
        await super().shutdown(sockets)


def server_config(app: Starlette, host: str, port: int, **kwargs: object) -> uvicorn.Config:
    """A uvicorn Config for the apiserver: httptools with coalesced writes if present (see
    apiserver.transport), no access log, no ``Server`` header and no proxy headers (nothing
    stands between kubectl and this server; uvicorn would parse X-Forwarded-* per request),
    no WebSocket protocol (nothing here speaks it; an upgrade request is answered as HTTP)."""
    options: dict[str, object] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": 5,
        "lifespan": "on",
        "proxy_headers": False,
        "server_header": False,
        "ws": "none",
    }
    try:
        from apiserver.transport import HttpProtocol
    except ImportError:  # no httptools: uvicorn's h11 protocol, writes as it makes them
        pass
    else:
        options["http"] = HttpProtocol
    options.update(kwargs)
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]
