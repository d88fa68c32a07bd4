"""Discovery documents and the Accept negotiation kubectl depends on."""

from __future__ import annotations

import pytest

from apiserver.discovery import (
    aggregated,
    aggregated_content_type,
    api_group,
    api_group_list,
    api_versions,
    core_resource_list,
    group_version_resource_list,
    negotiate,
)
from apiserver.resources import Resource, builtin_index

KUBECTL_132 = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
    "application/json"
)
KUBECTL_128 = (
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
)


@pytest.mark.parametrize(
    ("accept", "version"),
    [
        (KUBECTL_132, "v2"),
        (KUBECTL_128, "v2beta1"),
        ("application/json, */*", None),
        ("", None),
        (None, None),
        ("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList", None),
    ],
)
def test_accept_negotiation_picks_the_first_supported_entry(
    accept: str | None, version: str | None
) -> None:
    assert negotiate(accept) == version


def test_content_type_is_exact() -> None:
    assert aggregated_content_type("v2") == (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    )


def test_aggregated_core_group_lists_services_as_kubectl_needs() -> None:
    doc = aggregated(builtin_index(), core=True, version="v2")
    assert doc["apiVersion"] == "apidiscovery.k8s.io/v2"
    [core] = doc["items"]
    assert core["metadata"] == {}
    [v1] = core["versions"]
    assert v1["version"] == "v1" and v1["freshness"] == "Current"
    services = next(r for r in v1["resources"] if r["resource"] == "services")
    assert services == {
        "resource": "services",
        "responseKind": {"group": "", "version": "v1", "kind": "Service"},
        "scope": "Namespaced",
        "singularResource": "service",
        "verbs": [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        "shortNames": ["svc"],
        "categories": ["all"],
        "subresources": [
            {
                "subresource": "status",
                "responseKind": {"group": "", "version": "v1", "kind": "Service"},
                "verbs": ["get", "patch", "update"],
            }
        ],
    }
    namespaces = next(r for r in v1["resources"] if r["resource"] == "namespaces")
    assert namespaces["scope"] == "Cluster"


def test_aggregated_groups_include_runtime_resources() -> None:
    index = builtin_index()
    index.add(Resource("example.com", "v1", "Widget", "widgets", "widget", namespaced=True))
    doc = aggregated(index, core=False, version="v2beta1")
    names = [item["metadata"]["name"] for item in doc["items"]]
    assert names == ["discovery.k8s.io", "networking.k8s.io", "coordination.k8s.io", "example.com"]
    assert doc["apiVersion"] == "apidiscovery.k8s.io/v2beta1"


def test_legacy_documents() -> None:
    index = builtin_index()
    assert api_versions("127.0.0.1:6443")["versions"] == ["v1"]
    core = core_resource_list(index)
    names = [r["name"] for r in core["resources"]]
    assert "pods" in names and "pods/status" in names
    pods = next(r for r in core["resources"] if r["name"] == "pods")
    assert pods["shortNames"] == ["po"] and pods["namespaced"] is True
    groups = api_group_list(index)["groups"]
    discovery = next(g for g in groups if g["name"] == "discovery.k8s.io")
    assert discovery["preferredVersion"] == {"groupVersion": "discovery.k8s.io/v1", "version": "v1"}
    slices = group_version_resource_list(index, "discovery.k8s.io", "v1")
    assert slices is not None and slices["groupVersion"] == "discovery.k8s.io/v1"
    assert group_version_resource_list(index, "nope.io", "v1") is None
    assert api_group(index, "networking.k8s.io") is not None
    assert api_group(index, "nope.io") is None
