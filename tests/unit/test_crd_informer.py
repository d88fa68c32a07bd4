"""The apiserver's own informer (what the CRD controller and the webhook cache follow),
on the embedded store: events in order, and a re-list when the store has compacted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from apiserver.informer import follow, list_once
from apiserver.storage.factory import open_storage
from apiserver.storage.interface import Storage

PREFIX = "/registry/things/"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Storage]:
    storage = open_storage(f"sqlite:{tmp_path / 'state.db'}")
    await storage.start()
    yield storage
    await storage.close()


def thing(name: str, value: int = 0) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Thing", "metadata": {"name": name}, "value": value}


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.resyncs: list[list[str]] = []
        self.changed = asyncio.Event()

    async def on_event(self, type_: str, obj: dict[str, Any]) -> None:
        self.events.append((type_, obj["metadata"]["name"]))
        self.changed.set()

    async def resync(self, objs: list[dict[str, Any]]) -> None:
        self.resyncs.append(sorted(o["metadata"]["name"] for o in objs))
        self.changed.set()

    async def until(self, check: Any) -> None:
        async with asyncio.timeout(5):
            while not check():
                self.changed.clear()
                await self.changed.wait()


async def test_follow_delivers_every_change_after_the_list(store: Storage) -> None:
    await store.create(f"{PREFIX}a", thing("a"))
    recorder = Recorder()
    revision = await list_once(store, PREFIX, recorder.resync)
    assert recorder.resyncs == [["a"]]
    task = asyncio.create_task(follow(store, PREFIX, revision, recorder.on_event, recorder.resync))
    try:
        await store.create(f"{PREFIX}b", thing("b"))
        await store.guaranteed_update(f"{PREFIX}a", lambda o: {**o, "value": 1})
        await store.delete(f"{PREFIX}b")
        await store.create("/registry/other/x", thing("x"))
        await recorder.until(lambda: len(recorder.events) >= 3)
        assert recorder.events == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_compacted_revision_means_listing_again(store: Storage) -> None:
    await store.create(f"{PREFIX}a", thing("a"))
    old = await store.current_revision()
    await store.create(f"{PREFIX}b", thing("b"))
    await store.delete(f"{PREFIX}a")
    await store.compact(await store.current_revision())
    recorder = Recorder()
    task = asyncio.create_task(follow(store, PREFIX, old, recorder.on_event, recorder.resync))
    try:
        await recorder.until(lambda: recorder.resyncs)
        assert recorder.resyncs == [["b"]]
        await store.create(f"{PREFIX}c", thing("c"))
        await recorder.until(lambda: ("ADDED", "c") in recorder.events)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_failing_handler_does_not_stop_the_follower(store: Storage) -> None:
    seen: list[str] = []
    done = asyncio.Event()

    async def on_event(type_: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        seen.append(name)
        if name == "bad":
            raise RuntimeError("a bug in a controller")
        if name == "good":
            done.set()

    async def resync(objs: list[dict[str, Any]]) -> None:
        return None

    revision = await store.current_revision()
    task = asyncio.create_task(follow(store, PREFIX, revision, on_event, resync))
    try:
        await store.create(f"{PREFIX}bad", thing("bad"))
        await store.create(f"{PREFIX}good", thing("good"))
        async with asyncio.timeout(5):
            await done.wait()
        assert seen == ["bad", "good"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
