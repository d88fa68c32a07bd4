"""Lists served from the watch cache answer exactly as lists read from the store."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.server import RunningApiserver, shared_apiserver

__all__ = ["shared_apiserver"]

_names = itertools.count()


@pytest.fixture
def http(shared_apiserver: RunningApiserver) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_apiserver.url, timeout=10) as client:
        yield client


def namespace(http: httpx.Client) -> str:
    name = f"cache-{next(_names)}"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    assert http.post("/api/v1/namespaces", json=body).status_code == 201
    return name


def configmap(name: str, team: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"team": team}},
        "data": {"k": name},
    }


def test_a_list_right_after_writes_sees_them_as_the_store_does(http: httpx.Client) -> None:
    ns = namespace(http)
    path = f"/api/v1/namespaces/{ns}/configmaps"
    assert http.get(path).json()["items"] == []  # the cache for configmaps exists now
    for i, team in enumerate(["a", "b", "a"]):
        assert http.post(path, json=configmap(f"cm-{i}", team)).status_code == 201
    assert http.delete(f"{path}/cm-1").status_code == 200
    patched = http.patch(
        f"{path}/cm-2",
        json={"data": {"k": "changed"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200

    cached = http.get(path).json()  # no limit: the watch cache
    stored = http.get(path, params={"limit": 100}).json()  # a page: the store
    assert cached["items"] == stored["items"]
    assert [o["metadata"]["name"] for o in cached["items"]] == ["cm-0", "cm-2"]
    assert cached["items"][1]["data"] == {"k": "changed"}
    assert cached["kind"] == "ConfigMapList" and cached["apiVersion"] == "v1"
    assert int(cached["metadata"]["resourceVersion"]) >= int(
        patched.json()["metadata"]["resourceVersion"]
    )
    selected = http.get(path, params={"labelSelector": "team=a"}).json()
    assert [o["metadata"]["name"] for o in selected["items"]] == ["cm-0", "cm-2"]
    everywhere = http.get("/api/v1/configmaps", params={"resourceVersion": "0"}).json()
    assert {"cm-0", "cm-2"} <= {
        o["metadata"]["name"] for o in everywhere["items"] if o["metadata"]["namespace"] == ns
    }
