"""The route table: every URL the apiserver serves, listed explicitly."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from apiserver import discovery_endpoints as disc
from apiserver import handlers as h

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _resource_routes(base: str) -> list[Route]:
    """Collections, items and subresources under ``/api/{version}`` or ``/apis/{g}/{v}``.

    Namespaced paths come first: ``/api/v1/namespaces/{ns}/{plural}`` must win over the
    cluster-scoped ``/api/v1/{plural}/{name}/{sub}`` (the handler tells a Namespace's own
    subresource, ``/api/v1/namespaces/{name}/status``, apart).
    """
    shapes = (
        "/namespaces/{namespace}/{plural}",
        "/namespaces/{namespace}/{plural}/{name}",
        "/namespaces/{namespace}/{plural}/{name}/{sub}",
        "/{plural}",
        "/{plural}/{name}",
        "/{plural}/{name}/{sub}",
    )
    return [Route(base + shape, h.resource_endpoint, methods=ALL_METHODS) for shape in shapes]


def routes() -> list[BaseRoute]:
    """Resources first (the busy paths: Starlette tries routes in order); no two routes
    match the same path except where ``handlers.resolve`` tells them apart."""
    return [
        *_resource_routes("/api/{version}"),
        *_resource_routes("/apis/{group}/{version}"),
        Route("/version", h.version),
        Route("/healthz", h.healthz),
        Route("/livez", h.healthz),
        Route("/readyz", h.readyz),
        Route("/metrics", h.metrics),
        Route("/api", disc.core_versions),
        Route("/apis", disc.groups),
        Route("/api/{version}", disc.core_resources),
        Route("/apis/{group}", disc.group),
        Route("/apis/{group}/{version}", disc.group_resources),
        Route("/openapi/v3", disc.openapi_root),
        Route("/openapi/v3/{path:path}", disc.openapi_document),
        Route("/openapi/v2", disc.openapi_v2),
    ]
