"""The app's own dispatch of resource URLs matches what Starlette's route table would."""

from __future__ import annotations

import pytest
from starlette.routing import Match, Route

from apiserver import handlers
from apiserver.routes import ALL_METHODS, resource_params, routes

PATHS = [
    "/api/v1/namespaces",
    "/api/v1/namespaces/default",
    "/api/v1/namespaces/default/status",
    "/api/v1/namespaces/default/finalize",
    "/api/v1/namespaces/default/services",
    "/api/v1/namespaces/default/services/web",
    "/api/v1/namespaces/default/services/web/status",
    "/api/v1/namespaces/default/services/web/status/extra",
    "/api/v1/nodes",
    "/api/v1/nodes/n1",
    "/api/v1/nodes/n1/status",
    "/api/v1/nodes/n1/status/x",
    "/api/v1/services",
    "/apis/discovery.k8s.io/v1/endpointslices",
    "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/s1",
    "/apis/example.com/v1/namespaces/ns/widgets/w/scale",
    "/apis/example.com/v1/namespaces/ns/widgets/w/scale/x",
    "/apis/example.com/v1/clusterwidgets/w/status",
    "/api",
    "/api/v1",
    "/api/v1/",
    "/apis",
    "/apis/discovery.k8s.io",
    "/apis/discovery.k8s.io/v1",
    "/api/v1/namespaces/default/services/",
    "/api/v1//services",
    "/api//namespaces",
    "/apis//v1/widgets",
    "//api/v1/services",
    "/api/v1/namespaces/default/services//status",
    "/version",
    "/openapi/v3/api/v1",
    "/apix/v1/services",
    "/api/v1/namespaces/a b/services",
]


def starlette_params(method: str, path: str) -> dict[str, str] | None:
    """What Starlette's router does with the request: the resource route's parameters when
    a resource route fully matches first, else None."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in routes():
        match, child = route.matches(scope)
        if match is Match.FULL:
            if isinstance(route, Route) and route.endpoint is handlers.resource_route:
                params: dict[str, str] = child["path_params"]
                return params
            return None
    return None


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", [*ALL_METHODS, "TRACE"])
def test_resource_params_match_the_route_table(method: str, path: str) -> None:
    assert resource_params(method, path) == starlette_params(method, path)


def test_a_namespaced_collection_wins_over_a_cluster_scoped_subresource() -> None:
    assert resource_params("GET", "/api/v1/namespaces/default/services") == {
        "version": "v1",
        "namespace": "default",
        "plural": "services",
    }
