"""A CRD served at two versions: upstream's ``None`` conversion rewrites only apiVersion.

Objects are stored at the storage version (v1); every response carries the version of the
URL it answers, whichever version the object was written at."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.test_crd import CRDS, TABLE, _groups, widget, widget_crd
from tests.support.server import RunningApiserver, shared_apiserver

__all__ = ["shared_apiserver"]


@pytest.fixture
def http(shared_apiserver: RunningApiserver) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_apiserver.url, timeout=10) as client:
        yield client


@pytest.fixture
def group(http: httpx.Client) -> str:
    """A fresh group whose Widget CRD serves v1 (storage) and v1beta1."""
    name = f"g{next(_groups)}.conversion.example.com"
    crd = widget_crd(name)
    beta = copy.deepcopy(crd["spec"]["versions"][0])
    beta.update(name="v1beta1", storage=False)
    crd["spec"]["versions"].append(beta)
    resp = http.post(CRDS, json=crd)
    assert resp.status_code == 201, resp.text
    return name


def at(group: str, version: str, name: str = "") -> str:
    path = f"/apis/{group}/{version}/namespaces/default/widgets"
    return f"{path}/{name}" if name else path


def beta_widget(name: str, group: str) -> dict[str, Any]:
    body = widget(name, group)
    body["apiVersion"] = f"{group}/v1beta1"
    return body


def first_event(http: httpx.Client, path: str, **params: str) -> dict[str, Any]:
    with http.stream("GET", path, params={"watch": "true", "timeoutSeconds": "5", **params}) as s:
        event: dict[str, Any] = json.loads(next(s.iter_lines()))
    return event


def test_an_object_created_at_the_served_version_is_stored_at_the_storage_version(
    http: httpx.Client, group: str
) -> None:
    created = http.post(at(group, "v1beta1"), json=beta_widget("w", group))
    assert created.status_code == 201, created.text
    assert created.json()["apiVersion"] == f"{group}/v1beta1"
    assert http.get(at(group, "v1", "w")).json()["apiVersion"] == f"{group}/v1"
    assert http.get(at(group, "v1beta1", "w")).json()["apiVersion"] == f"{group}/v1beta1"


def test_lists_carry_the_url_version_from_the_cache_and_from_the_store(
    http: httpx.Client, group: str
) -> None:
    http.post(at(group, "v1beta1"), json=beta_widget("a", group)).raise_for_status()
    http.post(at(group, "v1"), json=widget("b", group)).raise_for_status()
    for version in ("v1", "v1beta1"):
        for params in ({}, {"limit": "10"}):
            listed = http.get(at(group, version), params=params).json()
            assert listed["apiVersion"] == f"{group}/{version}"
            assert {i["apiVersion"] for i in listed["items"]} == {f"{group}/{version}"}
            assert len(listed["items"]) == 2


def test_watch_events_carry_the_url_version(http: httpx.Client, group: str) -> None:
    http.post(at(group, "v1"), json=widget("w", group)).raise_for_status()
    initial = first_event(http, at(group, "v1beta1"), resourceVersion="0")
    assert initial["type"] == "ADDED"
    assert initial["object"]["apiVersion"] == f"{group}/v1beta1"
    rv = http.get(at(group, "v1")).json()["metadata"]["resourceVersion"]
    patched = http.patch(
        at(group, "v1beta1", "w"),
        content=json.dumps({"spec": {"size": 5}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["apiVersion"] == f"{group}/v1beta1"
    for version in ("v1beta1", "v1"):
        event = first_event(http, at(group, version), resourceVersion=rv)
        assert event["type"] == "MODIFIED"
        assert event["object"]["apiVersion"] == f"{group}/{version}"
        assert event["object"]["spec"]["size"] == 5


def test_updates_and_table_rows_carry_the_url_version(http: httpx.Client, group: str) -> None:
    created = http.post(at(group, "v1"), json=widget("w", group)).json()
    body = copy.deepcopy(created)
    body["apiVersion"] = f"{group}/v1beta1"
    body["spec"]["size"] = 9
    updated = http.put(at(group, "v1beta1", "w"), json=body)
    assert updated.status_code == 200, updated.text
    assert updated.json()["apiVersion"] == f"{group}/v1beta1"
    assert http.get(at(group, "v1", "w")).json()["apiVersion"] == f"{group}/v1"
    table = http.get(
        at(group, "v1beta1"), params={"includeObject": "Object"}, headers={"Accept": TABLE}
    ).json()
    assert table["rows"][0]["object"]["apiVersion"] == f"{group}/v1beta1"
    deleted = http.delete(at(group, "v1beta1", "w"))
    assert deleted.json()["apiVersion"] == f"{group}/v1beta1"
