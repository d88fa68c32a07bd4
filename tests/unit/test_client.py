"""The API client against httpx.MockTransport: paths, verbs, error mapping, watch, list_watch."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from minik8s.client import (
    SYNCED,
    AlreadyExists,
    ApiClient,
    ApiError,
    ApiUnreachable,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    ServerError,
    WatchEvent,
    resource_path,
)
from minik8s.config import write_kubeconfig

Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler) -> ApiClient:
    return ApiClient("http://api.test", transport=httpx.MockTransport(handler))


def status(code: int, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


def svc(name: str, rv: str, namespace: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": rv}}


def watch_body(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


# ------------------------------------------------------------------ paths


def test_core_group_paths_start_with_api_and_named_groups_with_apis() -> None:
    assert resource_path("v1", "services", "default", "web") == (
        "/api/v1/namespaces/default/services/web"
    )
    assert resource_path("discovery.k8s.io/v1", "endpointslices") == (
        "/apis/discovery.k8s.io/v1/endpointslices"
    )
    assert (
        resource_path("v1", "namespaces", None, "kube-system") == "/api/v1/namespaces/kube-system"
    )
    assert resource_path("v1", "pods", "ns", "p", "status") == "/api/v1/namespaces/ns/pods/p/status"


def test_a_subresource_without_a_name_is_refused() -> None:
    with pytest.raises(ValueError):
        resource_path("v1", "pods", "ns", None, "status")


# ------------------------------------------------------------------ verbs


async def test_get_returns_the_object_from_its_path() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=svc("web", "7"))

    async with client_for(handler) as api:
        obj = await api.get("v1", "services", "web", "default")
    assert obj["metadata"]["resourceVersion"] == "7"
    assert seen[0].method == "GET"
    assert seen[0].url.path == "/api/v1/namespaces/default/services/web"


async def test_a_404_status_is_raised_as_not_found_with_its_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json=status(404, "NotFound", 'services "web" not found'))

    async with client_for(handler) as api:
        with pytest.raises(NotFound) as info:
            await api.get("v1", "services", "web", "default")
    assert info.value.code == 404
    assert info.value.reason == "NotFound"
    assert info.value.message == 'services "web" not found'
    assert info.value.status["kind"] == "Status"


async def test_409_already_exists_and_conflict_are_told_apart() -> None:
    answers = iter(
        [
            httpx.Response(409, json=status(409, "AlreadyExists")),
            httpx.Response(409, json=status(409, "Conflict")),
        ]
    )

    async with client_for(lambda r: next(answers)) as api:
        with pytest.raises(AlreadyExists):
            await api.create("v1", "services", svc("web", ""), "default")
        with pytest.raises(Conflict) as info:
            await api.replace("v1", "services", "web", svc("web", "3"), "default")
    assert not isinstance(info.value, AlreadyExists)


async def test_an_error_without_a_status_body_still_carries_code_and_text() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="upstream down")

    async with client_for(handler) as api:
        with pytest.raises(ServerError) as info:
            await api.get("v1", "services", "web", "default")
    assert info.value.code == 503
    assert "upstream down" in info.value.message


async def test_422_is_invalid_and_keeps_its_causes() -> None:
    body = status(422, "Invalid", "bad port")
    body["details"] = {"causes": [{"field": "spec.ports[0].port"}]}

    async with client_for(lambda r: httpx.Response(422, json=body)) as api:
        with pytest.raises(Invalid) as info:
            await api.create("v1", "services", svc("web", ""), "default")
    assert info.value.details["causes"][0]["field"] == "spec.ports[0].port"


async def test_a_connection_failure_is_the_clients_own_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with client_for(handler) as api:
        with pytest.raises(ApiUnreachable) as info:
            await api.get("v1", "services", "web", "default")
    assert not isinstance(info.value, ApiError)
    assert "minik8s up" in str(info.value)


async def test_list_follows_continue_tokens_and_fills_in_kind() -> None:
    pages = {
        "": {"items": [svc("a", "1")], "metadata": {"resourceVersion": "9", "continue": "t1"}},
        "t1": {"items": [svc("b", "2")], "metadata": {"resourceVersion": "9"}},
    }
    queries: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        queries.append(params)
        doc = {"kind": "ServiceList", "apiVersion": "v1", **pages[params.get("continue", "")]}
        return httpx.Response(200, json=doc)

    async with client_for(handler) as api:
        items, rv = await api.list("v1", "services", label_selector="app=web", limit=1)
    assert [i["metadata"]["name"] for i in items] == ["a", "b"]
    assert rv == "9"
    assert items[0]["kind"] == "Service" and items[0]["apiVersion"] == "v1"
    assert queries[0] == {"labelSelector": "app=web", "limit": "1"}
    assert queries[1]["continue"] == "t1"


@pytest.mark.parametrize(
    ("patch_type", "content_type"),
    [
        ("merge", "application/merge-patch+json"),
        ("json", "application/json-patch+json"),
        ("strategic", "application/strategic-merge-patch+json"),
        ("apply", "application/apply-patch+yaml"),
    ],
)
async def test_patch_sends_the_content_type_of_its_kind(patch_type: Any, content_type: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=svc("web", "4"))

    async with client_for(handler) as api:
        await api.patch(
            "v1",
            "services",
            "web",
            {"spec": {}},
            "default",
            patch_type=patch_type,
            subresource="status",
        )
    assert seen[0].headers["content-type"] == content_type
    assert seen[0].url.path == "/api/v1/namespaces/default/services/web/status"
    if patch_type == "apply":
        assert seen[0].url.params["fieldManager"] == "minik8s"


async def test_delete_sends_preconditions_as_delete_options() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=svc("web", "5"))

    async with client_for(handler) as api:
        await api.delete("v1", "services", "web", "default", preconditions={"uid": "u1"})
    assert seen[0]["kind"] == "DeleteOptions"
    assert seen[0]["preconditions"] == {"uid": "u1"}


async def test_from_kubeconfig_uses_the_server_and_token(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:6443", namespace="ns1")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    api = ApiClient.from_kubeconfig(path, transport=httpx.MockTransport(handler))
    async with api:
        await api.get("v1", "namespaces", "default")
    assert api.namespace == "ns1"
    assert str(seen[0].url) == "http://127.0.0.1:6443/api/v1/namespaces/default"


# ------------------------------------------------------------------ watch


async def test_watch_yields_events_and_asks_for_bookmarks() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = watch_body(
            {"type": "ADDED", "object": svc("a", "11")},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
            {"type": "DELETED", "object": svc("a", "13")},
        )
        return httpx.Response(200, content=body)

    async with client_for(handler) as api:
        events = [e async for e in api.watch("v1", "services", resource_version="10")]
    assert [t for t, _ in events] == ["ADDED", "BOOKMARK", "DELETED"]
    params = seen[0].url.params
    assert params["watch"] == "true"
    assert params["resourceVersion"] == "10"
    assert params["allowWatchBookmarks"] == "true"


async def test_an_in_stream_410_error_event_is_raised_as_gone() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = watch_body({"type": "ERROR", "object": status(410, "Expired", "too old")})
        return httpx.Response(200, content=body)

    async with client_for(handler) as api:
        with pytest.raises(Gone):
            async for _ in api.watch("v1", "services", resource_version="1"):
                pass


class ScriptedServer:
    """Answers list and watch requests from queues; records each request's query."""

    def __init__(self, lists: list[dict[str, Any]], watches: list[httpx.Response]) -> None:
        self.lists = lists
        self.watches = watches
        self.requests: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        self.requests.append(params)
        if params.get("watch") == "true":
            if not self.watches:
                raise httpx.ReadTimeout("script exhausted", request=request)
            return self.watches.pop(0)
        return httpx.Response(200, json=self.lists.pop(0))


async def collect(api: ApiClient, count: int) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    async for event in api.list_watch("v1", "services", retry_delay=0.0):
        out.append(event)
        if len(out) == count:
            break
    return out


async def test_list_watch_marks_synced_after_the_list_then_resumes_from_the_last_version() -> None:
    server = ScriptedServer(
        lists=[{"items": [svc("a", "5")], "metadata": {"resourceVersion": "8"}}],
        watches=[
            httpx.Response(
                200,
                content=watch_body(
                    {"type": "ADDED", "object": svc("b", "9")},
                    {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
                ),
            ),
            httpx.Response(200, content=watch_body({"type": "MODIFIED", "object": svc("a", "16")})),
        ],
    )
    async with client_for(server) as api:
        events = await collect(api, 4)
    assert [(e.type, e.object.get("metadata", {}).get("name")) for e in events] == [
        ("ADDED", "a"),
        (SYNCED, None),
        ("ADDED", "b"),
        ("MODIFIED", "a"),
    ]
    watch_versions = [r["resourceVersion"] for r in server.requests if r.get("watch")]
    assert watch_versions == ["8", "15"]


async def test_list_watch_relists_on_410_and_reports_what_vanished_meanwhile() -> None:
    server = ScriptedServer(
        lists=[
            {"items": [svc("a", "5"), svc("b", "6")], "metadata": {"resourceVersion": "8"}},
            {"items": [svc("b", "6"), svc("c", "30")], "metadata": {"resourceVersion": "31"}},
        ],
        watches=[httpx.Response(410, json=status(410, "Expired", "too old"))],
    )
    async with client_for(server) as api:
        events = await collect(api, 6)
    assert [(e.type, e.object.get("metadata", {}).get("name")) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        (SYNCED, None),
        ("DELETED", "a"),
        ("ADDED", "c"),
        (SYNCED, None),
    ]


async def test_list_watch_retries_a_broken_stream_from_the_same_version() -> None:
    server = ScriptedServer(
        lists=[{"items": [], "metadata": {"resourceVersion": "3"}}],
        watches=[
            httpx.Response(503, json=status(503, "ServiceUnavailable")),
            httpx.Response(200, content=watch_body({"type": "ADDED", "object": svc("x", "4")})),
        ],
    )
    async with client_for(server) as api:
        events = await collect(api, 2)
    assert [e.type for e in events] == [SYNCED, "ADDED"]
    watch_versions = [r["resourceVersion"] for r in server.requests if r.get("watch")]
    assert watch_versions == ["3", "3"]
