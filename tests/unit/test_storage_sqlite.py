"""What only the embedded store does: slow watchers, periodic compaction, its file."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from apiserver.storage.interface import NotFound, RawObject, Unavailable, WatchEvent
from apiserver.storage.sqlite import SCHEMA_VERSION, SqliteStorage

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


# What schema version 1 wrote: the log alone, revisions from AUTOINCREMENT.
SCHEMA_1 = """
CREATE TABLE kine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE UNIQUE INDEX kine_name_prev_revision ON kine (name, prev_revision);
CREATE INDEX kine_name_id ON kine (name, id);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('compact_revision', 0);
"""


def write_schema_1_file(path: Path) -> None:
    """a created (2), updated (3); b created (4), deleted (5). ``sqlite_sequence`` says
    7, above the newest row (as after a compaction removed the newest tombstones): the
    revision must come from there."""
    rows = [
        (2, "/registry/a/a", 1, 0, 2, 0, b'{"metadata":{"name":"a"},"data":{"v":"1"}}'),
        (3, "/registry/a/a", 0, 0, 2, 2, b'{"metadata":{"name":"a"},"data":{"v":"2"}}'),
        (4, "/registry/a/b", 1, 0, 4, 0, b'{"metadata":{"name":"b"}}'),
        (5, "/registry/a/b", 0, 1, 4, 4, b'{"metadata":{"name":"b"}}'),
    ]
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA_1)
        conn.executemany("INSERT INTO kine VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("UPDATE sqlite_sequence SET seq = 7 WHERE name = 'kine'")


async def test_a_schema_1_file_is_upgraded_in_place_keeping_state_history_and_revision(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    write_schema_1_file(path)
    store = SqliteStorage(path, compact_interval=0)
    await store.start()
    try:
        assert await store.current_revision() == 7
        a = await store.get("/registry/a/a")
        assert a == {"metadata": {"name": "a", "resourceVersion": "3"}, "data": {"v": "2"}}
        with pytest.raises(NotFound):
            await store.get("/registry/a/b")
        assert (await store.list("/registry/")).items == [a]
        assert (await store.get("/registry/a/b", revision=4))["metadata"]["name"] == "b"
        history = store.watch("/registry/", since=1)
        assert [(e.type, e.revision) for e in [await anext(history) for _ in range(4)]] == [
            ("ADDED", 2),
            ("MODIFIED", 3),
            ("ADDED", 4),
            ("DELETED", 5),
        ]
        await history.aclose()
        updated = await store.guaranteed_update(
            "/registry/a/a", lambda o: {**o, "data": {"v": "3"}}
        )
        assert updated["metadata"]["resourceVersion"] == "8"
        again = await store.create("/registry/a/b", obj("b"))
        assert again["metadata"]["resourceVersion"] == "9"
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_a_file_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = SqliteStorage(path, compact_interval=0)
    with pytest.raises(Unavailable, match="newer minik8s"):
        await store.start()
    await store.close()


async def test_a_write_waits_for_another_program_holding_the_lock_and_reads_go_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite"
    store = SqliteStorage(path, compact_interval=0)
    await store.start()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await store.create("/registry/a/before", obj("before"))
        other.execute("BEGIN IMMEDIATE")  # e.g. the sqlite3 shell, writing
        waiting = asyncio.create_task(store.create("/registry/a/after", obj("after")))
        got = await store.get("/registry/a/before")  # the event loop is not blocked
        assert got["metadata"]["name"] == "before"
        assert not waiting.done()
        other.execute("ROLLBACK")
        async with asyncio.timeout(DEADLINE):
            created = await waiting
        assert (await store.get("/registry/a/after")) == created
    finally:
        other.close()
        await store.close()


async def test_a_failed_batch_fails_its_writers_and_the_next_writes_go_through(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite"
    store = SqliteStorage(path, compact_interval=0)
    await store.start()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON kine WHEN NEW.name LIKE '%/bad%'"
        " BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
    )
    try:
        await store.create("/registry/a/good0", obj("good0"))
        before = await store.current_revision()
        watch = store.watch("/registry/a/", since=before)
        with pytest.raises(Unavailable, match="refused by a test trigger"):
            await store.create("/registry/a/bad", obj("bad"))
        with pytest.raises(NotFound):
            await store.get("/registry/a/bad")
        assert await store.current_revision() == before
        created = await store.create("/registry/a/good1", obj("good1"))
        assert created["metadata"]["resourceVersion"] == str(before + 1)
        async with asyncio.timeout(DEADLINE):
            event = await anext(watch)
        assert (event.key, event.revision) == ("/registry/a/good1", before + 1)
        await watch.aclose()
    finally:
        other.close()
        await store.close()
