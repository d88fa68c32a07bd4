"""Watch over real HTTP: JSON lines, resume without gaps, 410 in-stream, bookmarks, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.server import RunningApiserver, running_apiserver, shared_apiserver

__all__ = ["shared_apiserver"]

SERVICES = "/api/v1/namespaces/default/services"
MERGE = {"Content-Type": "application/merge-patch+json"}
_names = itertools.count()


def unique(prefix: str = "w") -> str:
    return f"{prefix}-{next(_names)}"


def service(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}]},
    }


class Stream:
    """A watch read on its own thread and loop; lines arrive on a queue, so tests wait with
    a deadline, and close() cancels the read at once."""

    def __init__(
        self,
        url: str,
        path: str,
        params: dict[str, str],
        headers: dict[str, str] | None = None,
    ) -> None:
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.status_code = 0
        self.ended = threading.Event()
        self.error: httpx.HTTPError | None = None  # what broke the stream, if it did not end
        self._started = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        request = (url, path, {**params, "watch": "true"}, headers or {})
        self._thread = threading.Thread(target=self._main, args=request, daemon=True)
        self._thread.start()
        assert self._started.wait(10), "the watch did not start"

    def _main(self, url: str, path: str, params: dict[str, str], headers: dict[str, str]) -> None:
        self._task = self._loop.create_task(self._read(url, path, params, headers))
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)
        self._loop.close()

    async def _read(
        self, url: str, path: str, params: dict[str, str], headers: dict[str, str]
    ) -> None:
        timeout = httpx.Timeout(30, read=None)
        try:
            async with (
                httpx.AsyncClient(base_url=url, timeout=timeout) as client,
                client.stream("GET", path, params=params, headers=headers) as resp,
            ):
                self.status_code = resp.status_code
                self._started.set()
                async for line in resp.aiter_lines():
                    if line.strip():
                        self.lines.put(json.loads(line))
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self._started.set()
            self.ended.set()
            self.lines.put(None)

    def next(self, timeout: float = 10.0) -> dict[str, Any]:
        item = self.lines.get(timeout=timeout)
        assert item is not None, "the watch ended"
        return item

    def events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return [self.next(timeout) for _ in range(count)]

    def close(self) -> None:
        if self._task is not None and not self.ended.is_set():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(5)


@pytest.fixture
def http(shared_apiserver: RunningApiserver) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_apiserver.url, timeout=10) as client:
        yield client


def rv_of(obj: dict[str, Any]) -> str:
    rv: str = obj["metadata"]["resourceVersion"]
    return rv


def test_watch_sends_added_modified_deleted_as_json_lines(
    shared_apiserver: RunningApiserver, http: httpx.Client
) -> None:
    name = unique()
    start = http.get(SERVICES).json()["metadata"]["resourceVersion"]
    stream = Stream(
        shared_apiserver.url,
        SERVICES,
        {"resourceVersion": start, "fieldSelector": f"metadata.name={name}"},
    )
    try:
        created = http.post(SERVICES, json=service(name)).json()
        patched = http.patch(
            f"{SERVICES}/{name}", json={"metadata": {"labels": {"x": "1"}}}, headers=MERGE
        ).json()
        deleted = http.delete(f"{SERVICES}/{name}").json()
        events = stream.events(3)
        assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
        # The resourceVersion a write answers with is the one its event carries.
        assert [rv_of(e["object"]) for e in events] == [
            rv_of(created),
            rv_of(patched),
            rv_of(deleted),
        ]
        assert events[0]["object"]["kind"] == "Service"
        assert events[0]["object"]["apiVersion"] == "v1"
    finally:
        stream.close()


def test_watch_resumes_from_a_resource_version_without_a_gap(
    shared_apiserver: RunningApiserver, http: httpx.Client
) -> None:
    group = unique("g")
    names = [unique() for _ in range(5)]
    created = [http.post(SERVICES, json=service(n, grp=group)).json() for n in names]
    resume_from = rv_of(created[1])
    stream = Stream(
        shared_apiserver.url,
        SERVICES,
        {"resourceVersion": resume_from, "labelSelector": f"grp={group}"},
    )
    try:
        events = stream.events(3)
        assert [e["object"]["metadata"]["name"] for e in events] == names[2:]
        assert all(e["type"] == "ADDED" for e in events)
        assert stream.lines.empty()
    finally:
        stream.close()


def test_watch_without_resource_version_starts_with_the_current_objects(
    shared_apiserver: RunningApiserver, http: httpx.Client
) -> None:
    group = unique("g")
    names = sorted(unique() for _ in range(2))
    for n in names:
        http.post(SERVICES, json=service(n, grp=group))
    stream = Stream(shared_apiserver.url, SERVICES, {"labelSelector": f"grp={group}"})
    try:
        first = stream.events(2)
        assert sorted(e["object"]["metadata"]["name"] for e in first) == names
        later = unique()
        http.post(SERVICES, json=service(later, grp=group))
        assert stream.next()["object"]["metadata"]["name"] == later
    finally:
        stream.close()


def test_object_leaving_a_selector_is_seen_as_deleted(
    shared_apiserver: RunningApiserver, http: httpx.Client
) -> None:
    name = unique()
    group = unique("g")
    start = http.get(SERVICES).json()["metadata"]["resourceVersion"]
    stream = Stream(
        shared_apiserver.url, SERVICES, {"resourceVersion": start, "labelSelector": f"grp={group}"}
    )
    try:
        http.post(SERVICES, json=service(name, grp=group))
        http.patch(
            f"{SERVICES}/{name}", json={"metadata": {"labels": {"grp": "other"}}}, headers=MERGE
        )
        http.patch(
            f"{SERVICES}/{name}", json={"metadata": {"labels": {"grp": group}}}, headers=MERGE
        )
        assert [e["type"] for e in stream.events(3)] == ["ADDED", "DELETED", "ADDED"]
    finally:
        stream.close()


def test_expired_version_is_an_in_stream_410() -> None:
    # A fresh server: its watch history starts now, so an older version is the store's to
    # serve, and the store has compacted it. (History kept in memory is served, as
    # upstream's watch cache does, even after the store compacted it.)
    with running_apiserver() as api, httpx.Client(base_url=api.url) as http:
        old = http.post(SERVICES, json=service(unique())).json()
        for _ in range(3):
            http.post(SERVICES, json=service(unique()))
        newest = http.get(SERVICES).json()["metadata"]["resourceVersion"]
        api.call(api.app.state.api.registry.storage.compact(int(newest)))
        stream = Stream(api.url, SERVICES, {"resourceVersion": rv_of(old)})
        try:
            assert stream.status_code == 200
            event = stream.next()
            assert event["type"] == "ERROR"
            assert event["object"]["kind"] == "Status"
            assert event["object"]["code"] == 410
            assert event["object"]["reason"] == "Expired"
            assert stream.ended.wait(5)
        finally:
            stream.close()


def test_list_at_a_compacted_version_is_410(
    shared_apiserver: RunningApiserver, http: httpx.Client
) -> None:
    old = http.post(SERVICES, json=service(unique())).json()
    http.post(SERVICES, json=service(unique()))
    newest = http.get(SERVICES).json()["metadata"]["resourceVersion"]
    storage = shared_apiserver.app.state.api.registry.storage
    shared_apiserver.call(storage.compact(int(newest)))
    resp = http.get(
        SERVICES, params={"resourceVersion": rv_of(old), "resourceVersionMatch": "Exact"}
    )
    assert resp.status_code == 410
    assert resp.json()["reason"] == "Expired"


def test_timeout_seconds_ends_the_stream(shared_apiserver: RunningApiserver) -> None:
    # The same watch without timeoutSeconds, opened first, is still open when the timed
    # one has ended: the 1 s timeout ended it, not the server.
    rv = httpx.get(shared_apiserver.url + SERVICES).json()["metadata"]["resourceVersion"]
    control = Stream(shared_apiserver.url, SERVICES, {"resourceVersion": rv})
    stream = Stream(shared_apiserver.url, SERVICES, {"timeoutSeconds": "1", "resourceVersion": rv})
    try:
        assert stream.ended.wait(30)
        assert stream.error is None, stream.error
        assert not control.ended.is_set()
    finally:
        stream.close()
        control.close()


def test_bookmarks_arrive_when_asked_and_carry_a_resumable_version() -> None:
    with running_apiserver(bookmark_interval=0.2) as api, httpx.Client(base_url=api.url) as http:
        rv = http.get(SERVICES).json()["metadata"]["resourceVersion"]
        stream = Stream(api.url, SERVICES, {"resourceVersion": rv, "allowWatchBookmarks": "true"})
        try:
            created = http.post(SERVICES, json=service("marked")).json()
            assert stream.next()["type"] == "ADDED"
            bookmark = stream.next()
            assert bookmark["type"] == "BOOKMARK"
            assert bookmark["object"]["kind"] == "Service"
            assert int(rv_of(bookmark["object"])) >= int(rv_of(created))
        finally:
            stream.close()


def test_send_initial_events_ends_with_a_marked_bookmark(
    shared_apiserver: RunningApiserver, http: httpx.Client
) -> None:
    group = unique("g")
    http.post(SERVICES, json=service(unique(), grp=group))
    stream = Stream(
        shared_apiserver.url,
        SERVICES,
        {
            "labelSelector": f"grp={group}",
            "sendInitialEvents": "true",
            "resourceVersionMatch": "NotOlderThan",
            "allowWatchBookmarks": "true",
        },
    )
    try:
        assert stream.next()["type"] == "ADDED"
        bookmark = stream.next()
        assert bookmark["type"] == "BOOKMARK"
        assert bookmark["object"]["metadata"]["annotations"] == {
            "k8s.io/initial-events-end": "true"
        }
    finally:
        stream.close()


def test_table_watch_rows(shared_apiserver: RunningApiserver, http: httpx.Client) -> None:
    name = unique()
    rv = http.get(SERVICES).json()["metadata"]["resourceVersion"]
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    stream = Stream(
        shared_apiserver.url,
        SERVICES,
        {"resourceVersion": rv, "fieldSelector": f"metadata.name={name}"},
        headers={"Accept": accept},
    )
    try:
        http.post(SERVICES, json=service(name))
        http.delete(f"{SERVICES}/{name}")
        added, deleted = stream.events(2)
        assert added["type"] == "ADDED" and added["object"]["kind"] == "Table"
        assert [c["name"] for c in added["object"]["columnDefinitions"]][:2] == ["Name", "Type"]
        assert added["object"]["rows"][0]["cells"][0] == name
        assert added["object"]["rows"][0]["object"]["metadata"]["name"] == name
        assert deleted["type"] == "DELETED" and deleted["object"]["columnDefinitions"] == []
    finally:
        stream.close()


def test_shutdown_ends_open_watches() -> None:
    with running_apiserver() as api:
        stream = Stream(api.url, SERVICES, {"resourceVersion": "1"})
        api.stop()
        assert stream.ended.wait(10)
        # Ended by the apiserver, with the response's last chunk: uvicorn's graceful
        # shutdown (5 s) would have cut the connection instead, mid-response.
        assert stream.error is None, stream.error
        stream.close()


def test_a_version_from_the_future_is_an_in_stream_410(shared_apiserver: RunningApiserver) -> None:
    stream = Stream(shared_apiserver.url, SERVICES, {"resourceVersion": "999999999"})
    try:
        assert stream.status_code == 200
        event = stream.next()
        assert event["type"] == "ERROR"
        assert event["object"]["code"] == 410
        assert stream.ended.wait(5)
    finally:
        stream.close()
