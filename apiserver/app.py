"""The ASGI app: storage -> registry -> routes, and a uvicorn Server that ends watches.

``create_app(storage)`` wires one apiserver around a store (not yet started: the app's
lifespan starts it, bootstraps the ``default`` and ``kube-system`` namespaces, and closes
it). :class:`ApiServer` is uvicorn's Server with one change: on shutdown it ends every
open watch *before* waiting for connections to drain, since a watch never ends by itself.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette

from apiserver import handlers
from apiserver.admission_seam import Admission
from apiserver.extensions import Extensions
from apiserver.handlers import ApiState
from apiserver.metrics import Metrics
from apiserver.registry import Registry
from apiserver.resources import ResourceIndex, builtin_index
from apiserver.routes import routes
from apiserver.storage.interface import Storage

logger = logging.getLogger(__name__)


def create_app(
    storage: Storage,
    *,
    index: ResourceIndex | None = None,
    admission: Admission | None = None,
    bookmark_interval: float = handlers.BOOKMARK_INTERVAL_S,
) -> Starlette:
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

    app = Starlette(
        routes=routes(),
        lifespan=lifespan,
        exception_handlers={404: handlers.not_found, 405: handlers.method_not_allowed},
    )
    app.state.api = state
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
    """A uvicorn Config for the apiserver: httptools if present, no access log by default."""
    options: dict[str, object] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": 5,
        "lifespan": "on",
    }
    options.update(kwargs)
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]
