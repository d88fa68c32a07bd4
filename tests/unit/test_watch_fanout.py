"""The watch fan-out's pure parts: filters, subscribers, eager writes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from apiserver.watch import CachedEvent, Subscriber, WatchClosed, WatchFilter
from apiserver.watch_http import start_eagerly


def event(
    type_: str, rev: int, labels: dict[str, str], prev: dict[str, str] | None = None
) -> CachedEvent:
    def obj(lbls: dict[str, str]) -> dict[str, Any]:
        return {
            "metadata": {
                "name": "a",
                "namespace": "ns",
                "labels": lbls,
                "resourceVersion": str(rev),
            }
        }

    return CachedEvent(
        type_, "/registry/services/ns/a", obj(labels), rev, obj(prev) if prev is not None else None
    )


def team_a(obj: dict[str, Any]) -> bool:
    return bool(obj["metadata"]["labels"].get("team") == "a")


def test_each_event_is_serialised_once() -> None:
    ev = event("ADDED", 5, {"team": "a"})
    first = ev.line()
    assert first is ev.line()
    assert first.endswith(b"\n") and first.startswith(b'{"type":"ADDED","object":')


@pytest.mark.parametrize(
    ("before", "after", "seen"),
    [
        ({"team": "a"}, {"team": "a"}, "MODIFIED"),
        ({"team": "b"}, {"team": "a"}, "ADDED"),
        ({"team": "a"}, {"team": "b"}, "DELETED"),
        ({"team": "b"}, {"team": "b"}, None),
    ],
)
def test_a_selector_turns_modifications_into_arrivals_and_departures(
    before: dict[str, str], after: dict[str, str], seen: str | None
) -> None:
    filtered = WatchFilter("/registry/services/", team_a).apply(event("MODIFIED", 7, after, before))
    assert (filtered.type if filtered else None) == seen


def test_other_namespaces_are_filtered_by_key() -> None:
    assert WatchFilter("/registry/services/other/").apply(event("ADDED", 3, {})) is None


async def test_a_subscriber_sees_only_events_after_its_version() -> None:
    sub = Subscriber(10, WatchFilter("/registry/services/"))
    for rev in (9, 10, 11, 12):
        sub.push(event("ADDED", rev, {}))
    assert [e.revision for e in await sub.next_batch(0)] == [11, 12]


async def test_a_closed_subscriber_drains_then_reports_the_error() -> None:
    sub = Subscriber(0, WatchFilter("/registry/services/"))
    sub.push(event("ADDED", 1, {}))
    sub.close({"code": 410})
    assert [e.revision for e in await sub.next_batch(0)] == [1]
    with pytest.raises(WatchClosed) as closed:
        await sub.next_batch(0)
    assert closed.value.error == {"code": 410}


async def test_a_live_sink_takes_events_unless_busy_and_order_is_kept() -> None:
    sub = Subscriber(0, WatchFilter("/registry/services/"))
    taken: list[int] = []
    busy = False

    def sink(ev: CachedEvent) -> bool:
        if busy:
            return False
        taken.append(ev.revision)
        return True

    sub.sink = sink
    sub.push(event("ADDED", 1, {}))
    busy = True
    sub.push(event("MODIFIED", 2, {}))
    busy = False
    sub.push(event("MODIFIED", 3, {}))  # must queue behind 2, not overtake it
    assert taken == [1]
    assert [e.revision for e in await sub.next_batch(0)] == [2, 3]
    assert sub.bookmark_revision() == 3


async def test_bookmark_revision_never_skips_a_queued_event() -> None:
    sub = Subscriber(0, WatchFilter("/registry/services/", team_a))
    sub.push(event("ADDED", 4, {"team": "a"}))
    sub.push(event("ADDED", 6, {"team": "b"}))  # filtered out, but seen
    assert sub.bookmark_revision() == 0  # 4 is still queued
    await sub.next_batch(0)
    assert sub.bookmark_revision() == 6


async def test_start_eagerly_finishes_synchronous_work_on_the_spot() -> None:
    done: list[str] = []

    async def quick() -> None:
        done.append("x")

    assert start_eagerly(quick()) is None
    assert done == ["x"]


async def test_start_eagerly_hands_a_suspended_write_to_a_task() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def slow() -> None:
        steps.append("started")
        await gate
        steps.append("finished")

    rest = start_eagerly(slow())
    assert rest is not None and steps == ["started"]
    gate.set_result(None)
    await rest
    assert steps == ["started", "finished"]


async def test_a_cancelled_suspended_write_is_closed_inside() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def slow() -> None:
        try:
            await gate
        finally:
            seen.append("closed")

    rest = start_eagerly(slow())
    assert rest is not None
    rest.cancel()
    with pytest.raises(asyncio.CancelledError):
        await rest
    assert seen == ["closed"]


async def test_a_suspended_write_cancelled_midway_sees_the_cancellation() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def slow() -> None:
        try:
            await gate
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    rest = start_eagerly(slow())
    assert rest is not None
    await asyncio.sleep(0)  # the task has taken over the write
    rest.cancel()
    with pytest.raises(asyncio.CancelledError):
        await rest
    assert seen == ["cancelled"]


def test_watchers_with_the_same_selectors_share_one_filtering_of_an_event() -> None:
    calls = []

    def counted(obj: dict[str, Any]) -> bool:
        calls.append(obj)
        return team_a(obj)

    subs = [
        Subscriber(0, WatchFilter("/registry/services/", counted, ("team=a", ""))) for _ in range(3)
    ]
    shared: dict[object, CachedEvent | None] = {}
    ev = event("MODIFIED", 4, {"team": "a"}, {"team": "b"})
    for sub in subs:
        sub.push(ev, shared)
    assert len(calls) == 2  # the object and its previous state, once
    assert [[e.type for e in sub.pending] for sub in subs] == [["ADDED"]] * 3
