"""The list cache (upstream's watch cache) on the embedded store: consistent, in key order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from apiserver.storage.sqlite import SqliteStorage
from apiserver.watch import WatchHub

SERVICES = "/registry/services/"


def svc(namespace: str, name: str, team: str = "a") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"team": team}},
    }


def names(entries: list[Any]) -> list[str]:
    return [e.obj["metadata"]["name"] for e in entries]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    storage = SqliteStorage(tmp_path / "state.db", compact_interval=0)
    await storage.start()
    yield storage
    await storage.close()


@pytest.fixture
async def hub(store: SqliteStorage) -> AsyncIterator[WatchHub]:
    watch_hub = WatchHub(store)
    yield watch_hub
    await watch_hub.close()


async def test_a_consistent_list_sees_every_write_acknowledged_before_it(
    store: SqliteStorage, hub: WatchHub
) -> None:
    await store.create(f"{SERVICES}ns/b", svc("ns", "b"))
    first = await hub.cached_list(SERVICES, SERVICES, None, consistent=True)
    assert first is not None and names(first[0]) == ["b"]
    for name in ("c", "a"):
        await store.create(f"{SERVICES}ns/{name}", svc("ns", name))
        listed = await hub.cached_list(SERVICES, SERVICES, None, consistent=True)
        assert listed is not None
        assert listed[1] == await store.current_revision()
    assert listed is not None and names(listed[0]) == ["a", "b", "c"]
    await store.delete(f"{SERVICES}ns/b")
    listed = await hub.cached_list(SERVICES, SERVICES, None, consistent=True)
    assert listed is not None and names(listed[0]) == ["a", "c"]


async def test_writes_elsewhere_advance_the_cache_revision(
    store: SqliteStorage, hub: WatchHub
) -> None:
    await store.create(f"{SERVICES}ns/a", svc("ns", "a"))
    assert await hub.cached_list(SERVICES, SERVICES, None, consistent=True) is not None
    await store.create("/registry/pods/ns/p", {"metadata": {"name": "p", "namespace": "ns"}})
    listed = await hub.cached_list(SERVICES, SERVICES, None, consistent=True)
    assert listed is not None
    assert listed[1] == await store.current_revision()
    assert names(listed[0]) == ["a"]


async def test_namespaces_and_selectors_filter_the_cached_objects(
    store: SqliteStorage, hub: WatchHub
) -> None:
    for namespace, name, team in [("x", "a", "a"), ("xy", "b", "a"), ("x", "c", "b")]:
        await store.create(f"{SERVICES}{namespace}/{name}", svc(namespace, name, team))
    in_x = await hub.cached_list(SERVICES, f"{SERVICES}x/", None, consistent=True)
    assert in_x is not None and names(in_x[0]) == ["a", "c"]

    def team_a(obj: dict[str, Any]) -> bool:
        return bool(obj["metadata"]["labels"]["team"] == "a")

    selected = await hub.cached_list(SERVICES, SERVICES, team_a, consistent=False)
    assert selected is not None and names(selected[0]) == ["a", "b"]


async def test_cached_json_is_the_object_with_its_resource_version(
    store: SqliteStorage, hub: WatchHub
) -> None:
    created = await store.create(f"{SERVICES}ns/a", svc("ns", "a"))
    await store.guaranteed_update(f"{SERVICES}ns/a", lambda o: {**o, "spec": {"type": "ClusterIP"}})
    listed = await hub.cached_list(SERVICES, SERVICES, None, consistent=True)
    assert listed is not None
    (entry,) = listed[0]
    assert entry.obj == await store.get(f"{SERVICES}ns/a")
    assert entry.obj["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    assert b'"spec":{"type":"ClusterIP"}' in entry.json()
