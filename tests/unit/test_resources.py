"""The resource index: lookups by path and kind, and a generation that tracks changes."""

from __future__ import annotations

from apiserver.resources import Resource, builtin_index


def test_builtin_kinds_are_served_at_their_paths() -> None:
    index = builtin_index()
    svc = index.lookup("", "v1", "services")
    assert svc is not None
    assert (svc.kind, svc.namespaced, svc.short_names) == ("Service", True, ("svc",))
    assert svc.api_version == "v1" and svc.list_kind_name == "ServiceList"
    ns = index.lookup("", "v1", "namespaces")
    assert ns is not None and not ns.namespaced
    eps = index.by_kind("discovery.k8s.io", "EndpointSlice")
    assert eps is not None and eps.api_version == "discovery.k8s.io/v1"
    assert eps.group_resource == "endpointslices.discovery.k8s.io"
    assert index.lookup("", "v1", "widgets") is None


def test_adding_and_removing_a_resource_bumps_the_generation() -> None:
    index = builtin_index()
    start = index.generation
    widget = Resource("example.com", "v1", "Widget", "widgets", "widget", namespaced=True)
    index.add(widget)
    assert index.generation == start + 1
    index.add(widget)
    assert index.generation == start + 1, "re-adding the same resource changes nothing"
    assert index.lookup("example.com", "v1", "widgets") == widget
    assert "example.com" in index.groups()
    index.remove(widget)
    assert index.generation == start + 2
    assert index.lookup("example.com", "v1", "widgets") is None


def test_indexes_are_independent() -> None:
    one, two = builtin_index(), builtin_index()
    one.add(Resource("example.com", "v1", "Widget", "widgets", "widget", namespaced=True))
    assert two.lookup("example.com", "v1", "widgets") is None
