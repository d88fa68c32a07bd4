"""minik8s.client against the real apiserver on loopback."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from minik8s.client import (
    SYNCED,
    AlreadyExists,
    ApiClient,
    Conflict,
    Gone,
    NotFound,
    WatchEvent,
)
from tests.support.server import RunningApiserver, apiserver, shared_apiserver

__all__ = ["apiserver", "shared_apiserver"]

_names = itertools.count()


def unique(prefix: str = "c") -> str:
    return f"{prefix}-{next(_names)}"


def service(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]},
    }


@pytest.fixture
async def api(shared_apiserver: RunningApiserver) -> AsyncIterator[ApiClient]:
    async with ApiClient.from_kubeconfig(shared_apiserver.kubeconfig) as client:
        yield client


async def test_create_get_patch_replace_and_delete_round_trip(api: ApiClient) -> None:
    name = unique()
    created = await api.create("v1", "services", service(name), "default")
    assert created["metadata"]["resourceVersion"]
    fetched = await api.get("v1", "services", name, "default")
    assert fetched["metadata"]["uid"] == created["metadata"]["uid"]

    patched = await api.patch(
        "v1", "services", name, {"metadata": {"labels": {"tier": "web"}}}, "default"
    )
    assert patched["metadata"]["labels"]["tier"] == "web"

    stale = dict(created)
    with pytest.raises(Conflict):
        await api.replace("v1", "services", name, stale, "default")
    patched["metadata"]["labels"]["tier"] = "api"
    replaced = await api.replace("v1", "services", name, patched, "default")
    assert replaced["metadata"]["labels"]["tier"] == "api"

    await api.delete("v1", "services", name, "default")
    with pytest.raises(NotFound) as info:
        await api.get("v1", "services", name, "default")
    assert info.value.code == 404


async def test_creating_a_taken_name_is_already_exists(api: ApiClient) -> None:
    name = unique()
    await api.create("v1", "services", service(name), "default")
    with pytest.raises(AlreadyExists) as info:
        await api.create("v1", "services", service(name), "default")
    assert info.value.reason == "AlreadyExists"


async def test_a_delete_precondition_on_a_stale_uid_is_a_conflict(api: ApiClient) -> None:
    name = unique()
    await api.create("v1", "services", service(name), "default")
    with pytest.raises(Conflict):
        await api.delete("v1", "services", name, "default", preconditions={"uid": "not-it"})


async def test_list_pages_through_every_item_with_a_selector(api: ApiClient) -> None:
    group = unique("grp")
    for _ in range(5):
        await api.create("v1", "services", service(unique(), grp=group), "default")
    items, rv = await api.list("v1", "services", "default", label_selector=f"grp={group}", limit=2)
    assert len(items) == 5
    assert int(rv) > 0
    assert all(item["kind"] == "Service" for item in items)


async def test_watch_from_a_version_sees_the_changes_after_it(api: ApiClient) -> None:
    _, rv = await api.list("v1", "services", "default")
    name = unique()
    await api.create("v1", "services", service(name), "default")
    await api.delete("v1", "services", name, "default")
    seen: list[str] = []
    async with asyncio.timeout(10):
        async for event_type, _obj in api.watch(
            "v1", "services", "default", resource_version=rv, field_selector=f"metadata.name={name}"
        ):
            seen.append(event_type)
            if event_type == "DELETED":
                break
    assert seen == ["ADDED", "DELETED"]


async def test_watching_a_compacted_version_raises_gone(apiserver: RunningApiserver) -> None:
    async with ApiClient.from_kubeconfig(apiserver.kubeconfig) as api:
        old = await api.create("v1", "services", service(unique()), "default")
        await api.create("v1", "services", service(unique()), "default")
        _, newest = await api.list("v1", "services")
        storage = apiserver.app.state.api.registry.storage
        apiserver.call(storage.compact(int(newest)))
        with pytest.raises(Gone):
            async with asyncio.timeout(10):
                async for _ in api.watch(
                    "v1", "services", resource_version=old["metadata"]["resourceVersion"]
                ):
                    pass


async def test_list_watch_lists_marks_synced_then_streams_changes(api: ApiClient) -> None:
    group = unique("lw")
    first = unique()
    await api.create("v1", "services", service(first, grp=group), "default")
    events: list[WatchEvent] = []
    stream = api.list_watch("v1", "services", "default", label_selector=f"grp={group}")
    async with asyncio.timeout(10):
        async for event in stream:
            events.append(event)
            if event.type == SYNCED:
                second = unique()
                await api.create("v1", "services", service(second, grp=group), "default")
            elif len(events) == 3:
                break
    await stream.aclose()  # type: ignore[attr-defined]
    assert [e.type for e in events] == ["ADDED", SYNCED, "ADDED"]
    assert events[0].object["metadata"]["name"] == first
    assert events[2].object["metadata"]["name"] == second
