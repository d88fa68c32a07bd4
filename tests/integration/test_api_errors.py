"""Bad input of every kind gets its metav1.Status, and the store stays as it was."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.server import RunningApiserver, shared_apiserver

__all__ = ["shared_apiserver"]

SERVICES = "/api/v1/namespaces/default/services"
GOOD = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "target"},
    "spec": {"selector": {"app": "t"}, "ports": [{"port": 80}]},
}


@pytest.fixture
def http(shared_apiserver: RunningApiserver) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_apiserver.url, timeout=10) as client:
        if client.get(f"{SERVICES}/target").status_code == 404:
            assert client.post(SERVICES, json=GOOD).status_code == 201
        yield client


def store_revision(http: httpx.Client) -> str:
    """The store's revision as a list reports it (any stored change moves it)."""
    rv: str = http.get("/api/v1/namespaces").json()["metadata"]["resourceVersion"]
    return rv


def assert_status(resp: httpx.Response, code: int, reason: str) -> dict[str, Any]:
    assert resp.status_code == code, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    status: dict[str, Any] = resp.json()
    assert status["kind"] == "Status" and status["apiVersion"] == "v1"
    assert status["status"] == "Failure"
    assert status["code"] == code
    assert status["reason"] == reason
    assert status["message"]
    return status


CASES: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    # (id, method, path, request kwargs, code, reason)
    (
        "malformed-json",
        "POST",
        SERVICES,
        {"content": b'{"apiVersion": "v1", ', "headers": {"Content-Type": "application/json"}},
        400,
        "BadRequest",
    ),
    (
        "malformed-yaml",
        "POST",
        SERVICES,
        {
            "content": b"apiVersion: v1\nkind: [Service\n",
            "headers": {"Content-Type": "application/yaml"},
        },
        400,
        "BadRequest",
    ),
    (
        "too-large",
        "POST",
        SERVICES,
        {
            "content": b'{"apiVersion":"v1","kind":"ConfigMap","data":{"a":"'
            + b"x" * (3 * 1024 * 1024)
            + b'"}}',
            "headers": {"Content-Type": "application/json"},
        },
        413,
        "RequestEntityTooLarge",
    ),
    (
        "unsupported-patch-type",
        "PATCH",
        f"{SERVICES}/target",
        {"content": b"{}", "headers": {"Content-Type": "application/x-unknown-patch"}},
        415,
        "UnsupportedMediaType",
    ),
    (
        "protobuf-body",
        "POST",
        SERVICES,
        {"content": b"k8s\x00", "headers": {"Content-Type": "application/vnd.kubernetes.protobuf"}},
        415,
        "UnsupportedMediaType",
    ),
    ("put-on-a-collection", "PUT", SERVICES, {"json": GOOD}, 405, "MethodNotAllowed"),
    ("unknown-resource", "GET", "/api/v1/namespaces/default/widgets", {}, 404, "NotFound"),
    ("missing-object", "GET", f"{SERVICES}/absent", {}, 404, "NotFound"),
    (
        "invalid-name",
        "POST",
        SERVICES,
        {"json": dict(GOOD, metadata={"name": "myService"})},
        422,
        "Invalid",
    ),
    (
        "invalid-port",
        "POST",
        SERVICES,
        {"json": dict(GOOD, metadata={"name": "bad-port"}, spec={"ports": [{"port": 70000}]})},
        422,
        "Invalid",
    ),
    (
        "strict-unknown-field",
        "POST",
        f"{SERVICES}?fieldValidation=Strict",
        {"json": dict(GOOD, metadata={"name": "typo"}, spec={"portz": [{"port": 80}]})},
        400,
        "BadRequest",
    ),
    (
        "wrong-kind-for-url",
        "POST",
        SERVICES,
        {"json": dict(GOOD, kind="Pod", metadata={"name": "kind-mismatch"})},
        400,
        "BadRequest",
    ),
    (
        "namespace-mismatch",
        "POST",
        SERVICES,
        {"json": dict(GOOD, metadata={"name": "elsewhere", "namespace": "kube-system"})},
        400,
        "BadRequest",
    ),
    (
        "stale-put",
        "PUT",
        f"{SERVICES}/target",
        {"json": dict(GOOD, metadata={"name": "target", "resourceVersion": "1"})},
        409,
        "Conflict",
    ),
    (
        "failed-json-patch-test",
        "PATCH",
        f"{SERVICES}/target",
        {
            "json": [{"op": "test", "path": "/metadata/name", "value": "other"}],
            "headers": {"Content-Type": "application/json-patch+json"},
        },
        422,
        "Invalid",
    ),
    (
        "malformed-patch",
        "PATCH",
        f"{SERVICES}/target",
        {"content": b"{not json", "headers": {"Content-Type": "application/merge-patch+json"}},
        400,
        "BadRequest",
    ),
    (
        "bad-resource-version-match",
        "GET",
        f"{SERVICES}?resourceVersion=1&resourceVersionMatch=Sometimes",
        {},
        400,
        "BadRequest",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "code", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_gets_its_status_and_stores_nothing(
    http: httpx.Client, method: str, path: str, kwargs: dict[str, Any], code: int, reason: str
) -> None:
    before = store_revision(http)
    target_before = http.get(f"{SERVICES}/target").json()
    resp = http.request(method, path, **kwargs)
    assert_status(resp, code, reason)
    assert store_revision(http) == before
    assert http.get(f"{SERVICES}/target").json() == target_before


def test_invalid_gives_kubectl_the_kind_name_and_causes(http: httpx.Client) -> None:
    resp = http.post(SERVICES, json=dict(GOOD, metadata={"name": "myService"}))
    status = assert_status(resp, 422, "Invalid")
    assert status["details"]["kind"] == "Service"
    assert status["details"]["name"] == "myService"
    assert status["details"]["causes"][0]["field"] == "metadata.name"
    assert status["message"].startswith('Service "myService" is invalid: metadata.name: ')


def test_strict_names_the_unknown_field(http: httpx.Client) -> None:
    body = dict(GOOD, metadata={"name": "typo"}, spec={"ports": [{"port": 80, "nmae": "x"}]})
    resp = http.post(SERVICES, json=body, params={"fieldValidation": "Strict"})
    status = assert_status(resp, 400, "BadRequest")
    assert 'unknown field "spec.ports[0].nmae"' in status["message"]


def test_warn_accepts_and_warns_about_unknown_fields(http: httpx.Client) -> None:
    body = dict(GOOD, metadata={"name": "warned"}, spec={"ports": [{"port": 80}], "portz": 1})
    resp = http.post(SERVICES, json=body, params={"fieldValidation": "Warn"})
    assert resp.status_code == 201, resp.text
    assert 'unknown field \\"spec.portz\\"' in resp.headers["warning"]


def test_yaml_bodies_are_accepted(http: httpx.Client) -> None:
    body = (
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\n"
        b"data:\n  when: 2024-01-01\n"
    )
    resp = http.post(
        "/api/v1/namespaces/default/configmaps",
        content=body,
        headers={"Content-Type": "application/yaml"},
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["data"] == {"when": "2024-01-01"}
