"""Tables for kubectl get: ages as kubectl prints them, row metadata, CRD printer columns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from apiserver.resources import Resource, builtin_index
from apiserver.tables import build_table, human_duration, json_path, printer_columns

NOW = datetime(2024, 1, 10, 12, 0, 0, tzinfo=UTC)
INDEX = builtin_index()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (17, "17s"),
        (119, "119s"),
        (120, "2m"),
        (303, "5m3s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (5 * 3600 + 20 * 60, "5h20m"),
        (30 * 3600, "30h"),
        (2 * 86400, "2d"),
        (2 * 86400 + 4 * 3600, "2d4h"),
        (100 * 86400, "100d"),
        (3 * 365 * 86400 + 5 * 86400, "3y5d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration_matches_apimachinery(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def service(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"app": name},
            "creationTimestamp": "2024-01-10T11:59:43Z",
            **meta,
        },
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "ports": [{"port": 80}]},
    }


def test_table_rows_carry_partial_object_metadata() -> None:
    services = INDEX.lookup("", "v1", "services")
    assert services is not None
    table = build_table(services, [service("web")], now=NOW, resource_version="42")
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {"resourceVersion": "42"}
    [row] = table["rows"]
    assert row["cells"] == ["web", "ClusterIP", "10.96.0.1", "<none>", "80/TCP", "17s", "<none>"]
    assert row["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": service("web")["metadata"],
    }
    assert [c["priority"] for c in table["columnDefinitions"]] == [0, 0, 0, 0, 0, 0, 1]


def test_include_object_variants_and_watch_tables() -> None:
    services = INDEX.lookup("", "v1", "services")
    assert services is not None
    whole = build_table(services, [service("web")], include_object="Object", now=NOW)
    assert whole["rows"][0]["object"]["spec"]["clusterIP"] == "10.96.0.1"
    bare = build_table(services, [service("web")], include_object="None", now=NOW)
    assert "object" not in bare["rows"][0]
    event = build_table(services, [service("web")], now=NOW, with_definitions=False)
    assert event["columnDefinitions"] == []


def test_other_kinds_get_their_columns_and_unknown_kinds_name_and_age() -> None:
    endpoints = INDEX.lookup("", "v1", "endpoints")
    assert endpoints is not None
    eps = {
        "metadata": {"name": "web", "creationTimestamp": "2024-01-10T11:00:00Z"},
        "subsets": [
            {
                "addresses": [{"ip": f"10.0.0.{i}"} for i in range(1, 5)],
                "ports": [{"port": 8080}],
            }
        ],
    }
    table = build_table(endpoints, [eps], now=NOW)
    assert table["rows"][0]["cells"] == [
        "web",
        "10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080 + 1 more...",
        "60m",
    ]
    slices = INDEX.lookup("discovery.k8s.io", "v1", "endpointslices")
    assert slices is not None
    eps_slice = {
        "metadata": {"name": "web-x"},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"]}],
        "ports": [{"port": 8080}, {"port": 9100}],
    }
    assert build_table(slices, [eps_slice], now=NOW)["rows"][0]["cells"] == [
        "web-x",
        "IPv4",
        "8080,9100",
        "10.0.0.1",
        "<unknown>",
    ]
    widgets = Resource("example.com", "v1", "Widget", "widgets", "widget", namespaced=True)
    generic = build_table(widgets, [service("w")], now=NOW)
    assert [c["name"] for c in generic["columnDefinitions"]] == ["Name", "Age"]


def test_json_path_subset() -> None:
    obj = {
        "spec": {"size": 3, "items": [{"n": "a"}, {"n": "b"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert json_path(obj, ".spec.size") == 3
    assert json_path(obj, ".spec.items[1].n") == "b"
    assert json_path(obj, '.status.conditions[?(@.type=="Ready")].status') == "True"
    assert json_path(obj, ".spec.missing") is None


def test_crd_printer_columns_override_the_kind_columns() -> None:
    widgets = Resource("example.com", "v1", "Widget", "widgets", "widget", namespaced=True)
    columns = printer_columns(
        [
            {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            {"name": "Color", "type": "string", "jsonPath": ".spec.color", "priority": 1},
        ]
    )
    widget = {
        "metadata": {"name": "w", "creationTimestamp": "2024-01-10T11:58:00Z"},
        "spec": {"size": 2},
    }
    table = build_table(widgets, [widget], columns=columns, now=NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Size", "Age", "Color"]
    assert table["rows"][0]["cells"] == ["w", 2, "2m", None]
