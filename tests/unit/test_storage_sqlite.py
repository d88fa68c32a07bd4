"""What only the embedded store does: slow watchers, periodic compaction, its file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from apiserver.storage.interface import RawObject, Unavailable, WatchEvent
from apiserver.storage.sqlite import SqliteStorage

DEADLINE = 10.0


def obj(name: str) -> RawObject:
    return {"metadata": {"name": name}, "data": {"v": "1"}}


async def test_a_slow_watcher_catches_up_from_the_log_without_losing_events(
    tmp_path: Path,
) -> None:
    store = SqliteStorage(tmp_path / "s.sqlite", compact_interval=0, watch_queue_limit=10)
    await store.start()
    try:
        since = await store.current_revision()
        watch = store.watch("/registry/", since=since)
        first = await asyncio.gather(anext(watch), store.create("/registry/a/k000", obj("k")))
        for i in range(1, 100):
            await store.create(f"/registry/a/k{i:03d}", obj("k"))
        events: list[WatchEvent] = [first[0]]
        async with asyncio.timeout(DEADLINE):
            while len(events) < 100:
                events.append(await anext(watch))
        assert [e.key for e in events] == [f"/registry/a/k{i:03d}" for i in range(100)]
        assert [e.revision for e in events] == list(range(since + 1, since + 101))
        await watch.aclose()
    finally:
        await store.close()


async def test_periodic_compaction_keeps_the_last_revisions(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "s.sqlite", compact_interval=0.05, compact_retain=10)
    await store.start()
    try:
        for i in range(50):
            await store.create(f"/registry/a/k{i:03d}", obj("k"))
        current = await store.current_revision()
        async with asyncio.timeout(DEADLINE):
            while store.compacted_revision < current - 10:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert len((await store.list("/registry/a/")).items) == 50
        events = store.watch("/registry/a/", since=current - 10)
        assert (await anext(events)).revision == current - 9
        await events.aclose()
    finally:
        await store.close()


async def test_revision_does_not_move_back_when_compaction_removes_the_newest_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite"
    store = SqliteStorage(path, compact_interval=0)
    await store.start()
    await store.create("/registry/a/k", obj("k"))
    deleted = await store.delete("/registry/a/k")
    await store.compact(int(deleted["metadata"]["resourceVersion"]))
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM kine").fetchone()[0] == 0
    store = SqliteStorage(path, compact_interval=0)
    await store.start()
    try:
        assert await store.current_revision() == int(deleted["metadata"]["resourceVersion"])
    finally:
        await store.close()


async def test_a_fresh_store_starts_at_revision_one_like_etcd(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "s.sqlite", compact_interval=0)
    await store.start()
    try:
        assert await store.current_revision() == 1
        created = await store.create("/registry/a/k", obj("k"))
        assert created["metadata"]["resourceVersion"] == "2"
    finally:
        await store.close()


async def test_a_second_store_on_the_same_file_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    first = SqliteStorage(tmp_path / "s.sqlite", compact_interval=0)
    await first.start()
    second = SqliteStorage(tmp_path / "s.sqlite", compact_interval=0)
    with pytest.raises(Unavailable, match="in use by another process"):
        await second.start()
    await first.close()
    third = SqliteStorage(tmp_path / "s.sqlite", compact_interval=0)
    await third.start()
    await third.close()
