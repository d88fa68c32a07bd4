"""One conformance suite for every Storage backend (embedded SQLite and real etcd).

Each test runs on both backends; a backend that fails any of them is not done.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Callable

import pytest

from apiserver.storage.interface import (
    AlreadyExists,
    Compacted,
    Conflict,
    InvalidContinue,
    NotFound,
    RawObject,
    Storage,
    WatchEvent,
)
from tests.conformance.conftest import Backend
from tests.support.etcd import EtcdServer

DEADLINE = 30.0


def obj(name: str, **spec: object) -> RawObject:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "data": {k: str(v) for k, v in spec.items()},
    }


def set_data(**data: str) -> Callable[[RawObject], RawObject]:
    def apply(current: RawObject) -> RawObject:
        return {**current, "data": {**(current.get("data") or {}), **data}}

    return apply


def rv(o: RawObject) -> int:
    return int(o["metadata"]["resourceVersion"])


async def take(events: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    """The next ``count`` events, failing after a deadline instead of hanging."""
    got: list[WatchEvent] = []
    async with asyncio.timeout(DEADLINE):
        async for event in events:
            got.append(event)
            if len(got) == count:
                break
    return got


async def test_backend_satisfies_the_storage_protocol(store: Storage) -> None:
    assert isinstance(store, Storage)


async def test_create_returns_the_object_with_its_revision_and_get_reads_it(
    store: Storage,
) -> None:
    before = await store.current_revision()
    created = await store.create("/registry/configmaps/default/a", obj("a", x=1))
    assert rv(created) > before
    assert created["data"] == {"x": "1"}
    got = await store.get("/registry/configmaps/default/a")
    assert got == created
    assert await store.current_revision() == rv(created)


async def test_create_does_not_change_the_callers_object(store: Storage) -> None:
    mine = obj("a")
    mine["metadata"]["resourceVersion"] = "ignored"
    created = await store.create("/registry/configmaps/default/a", mine)
    assert mine["metadata"]["resourceVersion"] == "ignored"
    assert created["metadata"]["resourceVersion"] != "ignored"


async def test_create_of_an_existing_key_is_already_exists(store: Storage) -> None:
    await store.create("/registry/configmaps/default/a", obj("a"))
    with pytest.raises(AlreadyExists):
        await store.create("/registry/configmaps/default/a", obj("a"))


async def test_create_after_delete_makes_a_new_object(store: Storage) -> None:
    await store.create("/registry/configmaps/default/a", obj("a", v=1))
    await store.delete("/registry/configmaps/default/a")
    again = await store.create("/registry/configmaps/default/a", obj("a", v=2))
    assert (await store.get("/registry/configmaps/default/a")) == again


async def test_get_of_a_missing_key_is_not_found(store: Storage) -> None:
    with pytest.raises(NotFound):
        await store.get("/registry/configmaps/default/missing")


async def test_get_at_a_past_revision_sees_the_past(store: Storage) -> None:
    first = await store.create("/registry/configmaps/default/a", obj("a", v=1))
    await store.guaranteed_update("/registry/configmaps/default/a", lambda o: {**o, "data": {}})
    assert await store.get("/registry/configmaps/default/a", revision=rv(first)) == first


async def test_list_returns_live_objects_under_the_prefix_in_key_order(store: Storage) -> None:
    for name in ["c", "a", "b", "gone"]:
        await store.create(f"/registry/configmaps/default/{name}", obj(name))
    await store.create("/registry/configmaps/defaultx/other", obj("other"))
    await store.create("/registry/secrets/default/s", obj("s"))
    deleted = await store.delete("/registry/configmaps/default/gone")
    page = await store.list("/registry/configmaps/default/")
    assert [o["metadata"]["name"] for o in page.items] == ["a", "b", "c"]
    assert page.revision == rv(deleted) == await store.current_revision()
    assert page.cont == ""
    everything = await store.list("/registry/")
    assert len(everything.items) == 5


async def test_list_at_a_past_revision_sees_the_past(store: Storage) -> None:
    a = await store.create("/registry/configmaps/default/a", obj("a"))
    await store.create("/registry/configmaps/default/b", obj("b"))
    await store.delete("/registry/configmaps/default/a")
    page = await store.list("/registry/configmaps/default/", revision=rv(a))
    assert page.items == [a]
    assert page.revision == rv(a)


async def test_list_pages_are_pinned_to_the_revision_of_the_first_page(store: Storage) -> None:
    names = [f"n{i:02d}" for i in range(10)]
    for name in names:
        await store.create(f"/registry/configmaps/default/{name}", obj(name, v=0))
    first = await store.list("/registry/configmaps/default/", limit=4)
    assert [o["metadata"]["name"] for o in first.items] == names[:4]
    assert first.cont
    # Changes after the first page must not show in the following ones.
    await store.delete("/registry/configmaps/default/n05")
    await store.create("/registry/configmaps/default/n04a", obj("n04a"))
    await store.guaranteed_update(
        "/registry/configmaps/default/n09", lambda o: {**o, "data": {"v": "1"}}
    )
    seen = list(first.items)
    cont = first.cont
    while cont:
        page = await store.list("/registry/configmaps/default/", limit=4, cont=cont)
        assert page.revision == first.revision
        seen.extend(page.items)
        cont = page.cont
    assert [o["metadata"]["name"] for o in seen] == names
    assert seen[-1]["data"] == {"v": "0"}


async def test_pages_without_writes_between_them_add_up_to_the_whole_list(
    store: Storage,
) -> None:
    for i in range(7):
        await store.create(f"/registry/configmaps/default/n{i}", obj(f"n{i}"))
    whole = await store.list("/registry/configmaps/default/")
    seen: list[RawObject] = []
    cont = ""
    while True:
        page = await store.list("/registry/configmaps/default/", limit=3, cont=cont)
        assert page.revision == whole.revision
        seen.extend(page.items)
        cont = page.cont
        if not cont:
            break
    assert seen == whole.items


async def test_a_list_at_a_past_revision_equals_the_list_that_was_latest_then(
    store: Storage,
) -> None:
    prefix = "/registry/configmaps/default/"
    for name in "abcd":
        await store.create(f"{prefix}{name}", obj(name, v=0))
    await store.guaranteed_update(f"{prefix}b", set_data(v="1"))
    await store.delete(f"{prefix}c")
    await store.delete(f"{prefix}d")
    await store.create(f"{prefix}d", obj("d", v=2))
    latest = await store.list(prefix)
    await store.guaranteed_update(f"{prefix}b", set_data(v="3"))
    await store.delete(f"{prefix}a")
    await store.create(f"{prefix}c", obj("c", v=4))
    past = await store.list(prefix, revision=latest.revision)
    assert past.items == latest.items
    assert [o["metadata"]["name"] for o in past.items] == ["a", "b", "d"]


async def test_continue_token_that_was_not_issued_is_invalid(store: Storage) -> None:
    with pytest.raises(InvalidContinue):
        await store.list("/registry/configmaps/", limit=1, cont="not-a-token")


async def test_expired_continue_token_is_compacted(store: Storage) -> None:
    for name in "abc":
        await store.create(f"/registry/configmaps/default/{name}", obj(name))
    first = await store.list("/registry/configmaps/default/", limit=1)
    await store.guaranteed_update(
        "/registry/configmaps/default/a", lambda o: {**o, "data": {"v": "1"}}
    )
    await store.compact(await store.current_revision())
    with pytest.raises(Compacted):
        await store.list("/registry/configmaps/default/", limit=1, cont=first.cont)


async def test_reads_below_the_compacted_revision_are_compacted(store: Storage) -> None:
    a = await store.create("/registry/configmaps/default/a", obj("a", v=1))
    latest = await store.guaranteed_update(
        "/registry/configmaps/default/a", lambda o: {**o, "data": {"v": "2"}}
    )
    await store.compact(rv(latest))
    with pytest.raises(Compacted):
        await store.list("/registry/configmaps/default/", revision=rv(a))
    with pytest.raises(Compacted):
        await store.get("/registry/configmaps/default/a", revision=rv(a))
    # The current state survives compaction.
    assert (await store.get("/registry/configmaps/default/a")) == latest
    assert (await store.list("/registry/configmaps/default/")).items == [latest]


async def test_reads_at_exactly_the_compacted_revision_still_work(store: Storage) -> None:
    a = await store.create("/registry/configmaps/default/a", obj("a", v=1))
    b = await store.create("/registry/configmaps/default/b", obj("b"))
    await store.delete("/registry/configmaps/default/b")
    mark = await store.guaranteed_update("/registry/configmaps/default/a", set_data(v="2"))
    await store.guaranteed_update("/registry/configmaps/default/a", set_data(v="3"))
    await store.compact(rv(mark))
    page = await store.list("/registry/configmaps/default/", revision=rv(mark))
    assert page.items == [mark]
    assert await store.get("/registry/configmaps/default/a", revision=rv(mark)) == mark
    assert rv(a) < rv(b) < rv(mark)


async def test_concurrent_guaranteed_updates_all_land(store: Storage) -> None:
    key = "/registry/configmaps/default/counter"
    await store.create(key, obj("counter"))

    def add(writer: int) -> Callable[[RawObject], RawObject]:
        def apply(current: RawObject) -> RawObject:
            data = dict(current.get("data") or {})
            data[f"w{writer:02d}"] = "1"
            return {**current, "data": data}

        return apply

    async def updater(writer: int) -> None:
        for _ in range(2):
            await store.guaranteed_update(key, add(writer))

    await asyncio.gather(*(updater(w) for w in range(16)))
    final = await store.get(key)
    assert sorted(final["data"]) == [f"w{w:02d}" for w in range(16)]


async def test_update_passes_a_copy_and_returns_the_new_revision(store: Storage) -> None:
    key = "/registry/configmaps/default/a"
    created = await store.create(key, obj("a", v=1))
    seen: list[RawObject] = []

    def bump(current: RawObject) -> RawObject:
        seen.append(current)
        current["data"]["v"] = "2"
        return current

    updated = await store.guaranteed_update(key, bump)
    assert seen[0]["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert rv(updated) > rv(created)
    assert updated["data"] == {"v": "2"}
    assert await store.get(key) == updated
    assert created["data"] == {"v": "1"}


async def test_noop_update_writes_nothing(store: Storage) -> None:
    key = "/registry/configmaps/default/a"
    created = await store.create(key, obj("a", v=1))
    before = await store.current_revision()
    same = await store.guaranteed_update(key, lambda o: o)
    assert same == created
    assert await store.current_revision() == before
    # A copy with a different resourceVersion is still the same object.
    stale = await store.guaranteed_update(
        key, lambda o: {**o, "metadata": {**o["metadata"], "resourceVersion": "1"}}
    )
    assert stale == created
    assert await store.current_revision() == before


async def test_update_with_a_stale_resource_version_is_a_conflict(store: Storage) -> None:
    key = "/registry/configmaps/default/a"
    created = await store.create(key, obj("a", v=1))
    await store.guaranteed_update(key, lambda o: {**o, "data": {"v": "2"}})
    with pytest.raises(Conflict):
        await store.guaranteed_update(
            key,
            lambda o: {**o, "data": {"v": "3"}},
            expect_rv=created["metadata"]["resourceVersion"],
        )
    with pytest.raises(Conflict):
        await store.guaranteed_update(key, lambda o: o, expect_uid="another-uid")
    assert (await store.get(key))["data"] == {"v": "2"}


async def test_update_with_matching_preconditions_succeeds(store: Storage) -> None:
    key = "/registry/configmaps/default/a"
    created = await store.create(key, obj("a", v=1))
    updated = await store.guaranteed_update(
        key,
        lambda o: {**o, "data": {"v": "2"}},
        expect_rv=created["metadata"]["resourceVersion"],
        expect_uid="uid-a",
    )
    assert updated["data"] == {"v": "2"}


async def test_update_of_a_missing_key_is_not_found(store: Storage) -> None:
    with pytest.raises(NotFound):
        await store.guaranteed_update("/registry/configmaps/default/missing", lambda o: o)


async def test_update_error_aborts_without_writing(store: Storage) -> None:
    key = "/registry/configmaps/default/a"
    await store.create(key, obj("a"))
    before = await store.current_revision()

    def refuse(current: RawObject) -> RawObject:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        await store.guaranteed_update(key, refuse)
    assert await store.current_revision() == before


async def test_delete_returns_the_last_state_with_the_delete_revision(store: Storage) -> None:
    key = "/registry/configmaps/default/a"
    created = await store.create(key, obj("a", v=1))
    deleted = await store.delete(key)
    assert rv(deleted) > rv(created)
    assert rv(deleted) == await store.current_revision()
    assert deleted["data"] == created["data"]
    with pytest.raises(NotFound):
        await store.get(key)
    with pytest.raises(NotFound):
        await store.delete(key)


async def test_delete_with_preconditions(store: Storage) -> None:
    key = "/registry/configmaps/default/a"
    created = await store.create(key, obj("a", v=1))
    updated = await store.guaranteed_update(key, lambda o: {**o, "data": {"v": "2"}})
    with pytest.raises(Conflict):
        await store.delete(key, expect_rv=created["metadata"]["resourceVersion"])
    with pytest.raises(Conflict):
        await store.delete(key, expect_uid="another-uid")
    assert await store.get(key) == updated
    deleted = await store.delete(
        key, expect_rv=updated["metadata"]["resourceVersion"], expect_uid="uid-a"
    )
    assert deleted["data"] == {"v": "2"}


async def test_write_revisions_equal_their_event_revisions(store: Storage) -> None:
    start = await store.current_revision()
    key = "/registry/configmaps/default/a"
    created = await store.create(key, obj("a", v=1))
    updated = await store.guaranteed_update(key, lambda o: {**o, "data": {"v": "2"}})
    deleted = await store.delete(key)
    events = await take(store.watch("/registry/configmaps/", since=start), 3)
    assert [e.type for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert [e.obj for e in events] == [created, updated, deleted]
    assert [e.revision for e in events] == [rv(created), rv(updated), rv(deleted)]
    assert all(e.key == key for e in events)


async def test_deleted_event_carries_the_last_state(store: Storage) -> None:
    key = "/registry/configmaps/default/a"
    start = await store.current_revision()
    watch = store.watch("/registry/configmaps/default/", since=start)
    created = await store.create(key, obj("a", v=1))
    updated = await store.guaranteed_update(key, lambda o: {**o, "data": {"v": "2"}})
    deleted = await store.delete(key)
    events = await take(watch, 3)
    assert events[2].type == "DELETED"
    assert events[2].obj["data"] == {"v": "2"}
    assert rv(events[2].obj) == rv(deleted) == events[2].revision
    assert events[1].prev is not None and events[1].prev["data"] == created["data"]
    assert events[2].prev is not None and rv(events[2].prev) == rv(updated)


async def test_watch_since_zero_starts_from_now(store: Storage) -> None:
    old = await store.create("/registry/configmaps/default/old", obj("old"))
    watch = store.watch("/registry/configmaps/default/", since=0)
    first = asyncio.ensure_future(anext(watch))
    try:
        async with asyncio.timeout(DEADLINE):
            i = 0
            while not first.done():
                await store.create(f"/registry/configmaps/default/new{i}", obj(f"new{i}"))
                i += 1
                await asyncio.wait({first}, timeout=0.05)
        event = first.result()
    finally:
        first.cancel()
    assert event.key.startswith("/registry/configmaps/default/new")
    assert event.revision > rv(old)


async def test_watch_from_a_revision_sees_every_change_in_order_while_writers_run(
    store: Storage,
) -> None:
    total, writers = 2000, 16
    start = await store.current_revision()
    live = store.watch("/registry/pods/", since=start)
    first = asyncio.ensure_future(take(live, total))

    async def writer(w: int) -> None:
        for i in range(w, total, writers):
            await store.create(f"/registry/pods/ns/p{i:05d}", obj(f"p{i}"))

    tasks = [asyncio.ensure_future(writer(w)) for w in range(writers)]
    # A second watch from the same revision opens halfway: it replays history, then
    # switches to live events while writers still run.
    async with asyncio.timeout(DEADLINE):
        while await store.current_revision() < start + total // 2:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    late = await take(store.watch("/registry/pods/", since=start), total)
    await asyncio.gather(*tasks)
    early = await first
    for events in (early, late):
        revisions = [e.revision for e in events]
        assert all(a < b for a, b in itertools.pairwise(revisions))
        assert revisions[0] > start
        assert {e.key for e in events} == {f"/registry/pods/ns/p{i:05d}" for i in range(total)}
        assert all(e.type == "ADDED" and rv(e.obj) == e.revision for e in events)
    assert [e.revision for e in early] == [e.revision for e in late]


async def test_watch_only_sees_its_prefix(store: Storage) -> None:
    start = await store.current_revision()
    await store.create("/registry/secrets/default/s", obj("s"))
    mine = await store.create("/registry/configmaps/default/a", obj("a"))
    events = await take(store.watch("/registry/configmaps/", since=start), 1)
    assert events[0].obj == mine


async def test_watch_from_a_compacted_revision_is_compacted(store: Storage) -> None:
    key = "/registry/configmaps/default/a"
    created = await store.create(key, obj("a", v=1))
    for v in range(2, 5):
        await store.guaranteed_update(key, set_data(v=str(v)))
    await store.compact(await store.current_revision())
    with pytest.raises(Compacted):
        await take(store.watch("/registry/configmaps/", since=rv(created) - 1), 1)


async def test_compaction_keeps_what_is_current_and_later(store: Storage) -> None:
    keys = [f"/registry/configmaps/default/k{i}" for i in range(20)]
    for key in keys:
        await store.create(key, obj(key[-3:], v=0))
    for key in random.sample(keys, 10):
        await store.guaranteed_update(key, lambda o: {**o, "data": {"v": "1"}})
    for key in keys[:5]:
        await store.delete(key)
    before = await store.list("/registry/configmaps/default/")
    mark = await store.current_revision()
    await store.compact(mark)
    after = await store.list("/registry/configmaps/default/")
    assert after.items == before.items
    changed = await store.guaranteed_update(keys[10], lambda o: {**o, "data": {"v": "2"}})
    events = await take(store.watch("/registry/configmaps/", since=mark), 1)
    assert events[0].obj == changed


async def test_revisions_never_reset_when_the_store_reopens(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    if backend.kind == "etcd":
        own: EtcdServer = request.getfixturevalue("own_etcd")
        backend.etcd_endpoint = own.endpoint
    first = backend.open()
    await first.start()
    last = 0
    for i in range(5):
        last = rv(await first.create(f"/registry/configmaps/default/k{i}", obj(f"k{i}")))
    deleted = await first.delete("/registry/configmaps/default/k4")
    await first.compact(rv(deleted))
    await first.close()
    if backend.kind == "etcd":
        own.stop()
        own.start()
    second = backend.open()
    await second.start()
    try:
        assert await second.current_revision() >= rv(deleted) > last
        again = await second.create("/registry/configmaps/default/k4", obj("k4"))
        assert rv(again) > rv(deleted)
        names = [o["metadata"]["name"] for o in (await second.list("/registry/")).items]
        assert names == ["k0", "k1", "k2", "k3", "k4"]
    finally:
        await second.close()


async def test_watch_ends_when_the_store_closes(backend: Backend) -> None:
    opened = backend.open()
    await opened.start()
    watch = opened.watch("/registry/", since=await opened.current_revision())
    pending = asyncio.ensure_future(take(watch, 1))
    await asyncio.sleep(0)
    await opened.close()
    async with asyncio.timeout(DEADLINE):
        assert await pending == []
