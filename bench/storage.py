"""Storage benchmark: both backends, each beside its raw baseline measured in the same run.

For the embedded SQLite store (synchronous=FULL: fsync on every commit) and for etcd
(Debian's etcd-server, started here on loopback with its data in a temporary folder):

- 10,000 creates of 1 KiB objects, one at a time and 16 in flight;
- a list of those 10,000 objects, whole and in pages of 500 (median of 5), at the latest
  revision and, for the SQLite store, at a past one (read from the revision log); timed
  until the page (every page) is in the caller's hands, and, in brackets, with the caller
  then freeing it (10,000 decoded objects take 10+ ms to free). Each round starts once
  the previous result is freed: until 2026-11 the next round started while a pool
  thread was still freeing it, which counted that in the next list;
- put-to-watch-event latency (a create until its event arrives on an open watch).

Baselines: raw sqlite3 commits on the same disk (and the disk's fdatasync rate) for the
SQLite store; for etcd, the raw client rate through the same aetcd client (txn
create-if-absent puts of the same bytes, no JSON, no objects) at the same concurrency.

Run alone: ``python -m bench storage``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from apiserver.storage.etcd import EtcdStorage
from apiserver.storage.interface import Page, RawObject, Storage
from apiserver.storage.sqlite import SqliteStorage
from bench.report import Report

CREATES = 10_000
ROUNDS = 3  # creates are timed in rounds (raw and ours alternating); the median is shown
CONCURRENCY = 16
PAGE = 500
LIST_ROUNDS = 5
EVENT_SAMPLES = 1_000
OBJECT_BYTES = 1024


def make_object(i: int) -> RawObject:
    """A ConfigMap whose stored JSON is ``OBJECT_BYTES`` long."""
    obj: RawObject = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"cm-{i:05d}",
            "namespace": "bench",
            "uid": f"00000000-0000-4000-8000-{i:012d}",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": "bench", "shard": str(i % 16)},
        },
        "data": {"payload": ""},
    }
    obj["data"]["payload"] = "x" * (OBJECT_BYTES - len(orjson.dumps(obj)))
    return obj


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@dataclass
class Rate:
    ops_per_s: float
    p50_ms: float
    p99_ms: float

    def __str__(self) -> str:
        return f"{self.ops_per_s:,.0f}/s (p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms)"


async def measure_rate(
    op: Callable[[int], Awaitable[object]], count: int, concurrency: int
) -> Rate:
    """Run ``op(i)`` for i in range(count) from ``concurrency`` tasks."""
    latencies: list[float] = []

    async def worker(first: int) -> None:
        for i in range(first, count, concurrency):
            started = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    return Rate(count / elapsed, percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3)


def median(rates: list[Rate]) -> Rate:
    """The round with the median rate (its latencies come along)."""
    return sorted(rates, key=lambda rate: rate.ops_per_s)[len(rates) // 2]


def prefix_of(kind: str, round_: int) -> str:
    """Round 0 of the concurrent creates fills the prefix the lists read (10,000 objects)."""
    return (
        "/registry/configmaps/bench/"
        if kind == "c16" and round_ == 0
        else (f"/registry/configmaps/{kind}-{round_}/")
    )


async def create_rounds(store: Storage, concurrency: int) -> Rate:
    kind = "c16" if concurrency > 1 else "seq"
    return median([await creates(store, prefix_of(kind, r), concurrency) for r in range(ROUNDS)])


async def creates(store: Storage, prefix: str, concurrency: int) -> Rate:
    objects = [make_object(i) for i in range(CREATES)]

    async def create(i: int) -> object:
        return await store.create(f"{prefix}cm-{i:05d}", objects[i])

    return await measure_rate(create, CREATES, concurrency)


@dataclass
class Timing:
    """Median ms until a list's result was in the caller's hands, and with the caller
    then freeing it (10,000 decoded objects take a while to free)."""

    ms: float
    freed_ms: float

    def __str__(self) -> str:
        return f"{self.ms:.1f} ms ({self.freed_ms:.1f} ms counting the caller freeing it after)"


async def timed(action: Callable[[], Awaitable[object]], rounds: int = LIST_ROUNDS) -> Timing:
    """How long ``action`` takes to return its result, and to return it and drop it."""
    got, freed = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        result = await action()
        got.append((time.perf_counter() - started) * 1e3)
        # Untimed: the worker thread that read the list, and the loop's handle that resumed
        # this task, still hold the result; once they let go, it is freed here, and the
        # next round does not start with the previous result being freed beside it.
        await asyncio.sleep(0.05)
        dropping = time.perf_counter()
        del result
        freed.append(got[-1] + (time.perf_counter() - dropping) * 1e3)
    return Timing(statistics.median(got), statistics.median(freed))


async def list_whole(store: Storage, prefix: str, revision: int = 0) -> Page:
    page = await store.list(prefix, revision=revision)
    assert len(page.items) == CREATES, len(page.items)
    return page


async def list_paged(store: Storage, prefix: str) -> list[Page]:
    """Every page, kept until the caller drops them (as a whole list is)."""
    pages: list[Page] = []
    cont = ""
    while True:
        page = await store.list(prefix, limit=PAGE, cont=cont)
        pages.append(page)
        cont = page.cont
        if not cont:
            break
    count = sum(len(page.items) for page in pages)
    assert count == CREATES, count
    return pages


async def put_to_event(store: Storage, prefix: str) -> tuple[float, float]:
    """p50 and p99 (ms) from the start of a create to its event on an open watch."""
    arrived: dict[str, asyncio.Future[float]] = {}
    since = await store.current_revision()

    async def consume() -> None:
        async for event in store.watch(prefix, since=since):
            future = arrived.get(event.key)
            if future is not None and not future.done():
                future.set_result(time.perf_counter())

    consumer = asyncio.create_task(consume())
    loop = asyncio.get_running_loop()
    samples = []
    try:
        for i in range(EVENT_SAMPLES):
            key = f"{prefix}ev-{i:05d}"
            arrived[key] = loop.create_future()
            started = time.perf_counter()
            await store.create(key, make_object(i))
            async with asyncio.timeout(10):
                samples.append((await arrived[key] - started) * 1e3)
    finally:
        consumer.cancel()
    return percentile(samples, 50), percentile(samples, 99)


# -- SQLite ------------------------------------------------------------------------------


def fdatasync_rate(directory: Path, count: int = 2000) -> float:
    """fdatasync/s of 2,300-byte writes (the shape of etcd's recommended fio check)."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"x" * 2300
        started = time.perf_counter()
        for _ in range(count):
            os.write(fd, block)
            os.fdatasync(fd)
        return count / (time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()


def raw_sqlite_commits(directory: Path, per_commit: int, count: int = 5000) -> float:
    """Rows/s with plain sqlite3 (WAL, synchronous=FULL), ``per_commit`` 1 KiB rows a commit."""
    conn = sqlite3.connect(directory / "raw.sqlite", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, name TEXT, v BLOB)")
        value = orjson.dumps(make_object(0))
        started = time.perf_counter()
        for first in range(0, count, per_commit):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO t (name, v) VALUES (?, ?)",
                ((f"k{first + j}-{per_commit}", value) for j in range(per_commit)),
            )
            conn.execute("COMMIT")
        return count / (time.perf_counter() - started)
    finally:
        conn.close()


def raw_store_statements(directory: Path, count: int = 3000) -> float:
    """Creates/s with plain sqlite3 running the store's own schema and write statements
    (claim the name in ``current``, append to the log and its name index: three b-trees),
    one create per commit, as the store's writer thread does for one client."""
    from apiserver.storage.sqlite import _APPEND_CREATED, _CLAIM, _SCHEMA

    conn = sqlite3.connect(directory / "raw-schema.sqlite", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.executescript(_SCHEMA)
        values = [orjson.dumps(make_object(i)) for i in range(count)]
        started = time.perf_counter()
        for i, value in enumerate(values):
            key = f"/registry/configmaps/bench/{i:05d}"
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_CLAIM, (key, i + 1))
            conn.execute(_APPEND_CREATED, (i + 1, key, value))
            conn.execute("COMMIT")
        return count / (time.perf_counter() - started)
    finally:
        conn.close()


async def sqlite_figures(report: Report, directory: Path) -> None:
    section = report.section(
        "SQLite store (embedded default)",
        note=(
            f"`SqliteStorage(synchronous='FULL')`: every commit is fsynced before it is"
            f" acknowledged. {CREATES:,} creates of {OBJECT_BYTES} B objects per round, the"
            f" median of {ROUNDS} rounds; SQLite {sqlite3.sqlite_version}; on"
            f" {type(asyncio.get_running_loop()).__module__.split('.')[0]}'s event loop, the"
            " one `minik8s apiserver` runs the store on."
        ),
    )
    fsyncs = await asyncio.to_thread(fdatasync_rate, directory)
    raw_one = await asyncio.to_thread(raw_sqlite_commits, directory, 1, 3000)
    raw_schema = await asyncio.to_thread(raw_store_statements, directory)
    raw_batch = await asyncio.to_thread(raw_sqlite_commits, directory, CONCURRENCY, 10000)
    store = SqliteStorage(directory / "bench.sqlite", compact_interval=0)
    await store.start()
    try:
        seq = await create_rounds(store, 1)
        batches_before, writes_before = store.batches, store.writes
        conc = await create_rounds(store, CONCURRENCY)
        per_commit = (store.writes - writes_before) / max(store.batches - batches_before, 1)
        raw_list = await asyncio.to_thread(raw_sqlite_list, store.path)
        decode_only = await asyncio.to_thread(decode_ms, store.path)
        whole = await timed(lambda: list_whole(store, "/registry/configmaps/bench/"))
        paged = await timed(lambda: list_paged(store, "/registry/configmaps/bench/"))
        listed_at = await store.current_revision()
        p50, p99 = await put_to_event(store, "/registry/events-bench/")
        past = await timed(
            lambda: list_whole(store, "/registry/configmaps/bench/", revision=listed_at)
        )
    finally:
        await store.close()
    relaxed = SqliteStorage(directory / "normal.sqlite", synchronous="NORMAL", compact_interval=0)
    await relaxed.start()
    try:
        relaxed_seq = await create_rounds(relaxed, 1)
        relaxed_conc = await create_rounds(relaxed, CONCURRENCY)
    finally:
        await relaxed.close()
    section.row(
        "creates, 1 at a time",
        seq,
        target=">= 3,000/s",
        baseline=(
            f"raw sqlite3, 1 row per commit: {raw_one:,.0f}/s; the store's own statements"
            f" through raw sqlite3, 1 create per commit: {raw_schema:,.0f}/s; disk"
            f" fdatasync: {fsyncs:,.0f}/s"
        ),
        ok=seq.ops_per_s >= 3000,
    )
    section.row(
        f"creates, {CONCURRENCY} in flight",
        f"{conc}; {per_commit:.1f} writes per commit",
        target=">= 10,000/s",
        baseline=f"raw sqlite3, {CONCURRENCY} rows per commit: {raw_batch:,.0f}/s",
        ok=conc.ops_per_s >= 10000,
    )
    section.row(
        f"list {CREATES:,} objects, whole",
        str(whole),
        target="<= 40 ms",
        baseline=(
            f"the list's SQL alone, values not decoded: {raw_list:.1f} ms; orjson decode of"
            f" the {CREATES:,} values alone, cyclic GC paused: {decode_only:.1f} ms"
        ),
        ok=whole.ms <= 40,
    )
    section.row(f"list {CREATES:,} objects, pages of {PAGE}", str(paged))
    section.row(
        f"list {CREATES:,} objects, whole, at a past revision (read from the log)", str(past)
    )
    section.row(
        "for contrast: synchronous=NORMAL (kine's default; a power loss may drop the last commits)",
        f"1 at a time {relaxed_seq}; {CONCURRENCY} in flight {relaxed_conc}",
    )
    section.row(
        "put -> watch event",
        f"p50 {p50:.3f} ms, p99 {p99:.3f} ms",
        target="p99 <= 2 ms",
        baseline=f"create acknowledged, 1 at a time: p50 {seq.p50_ms:.3f} ms",
        ok=p99 <= 2,
    )


def _bench_rows(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
    """The rows a latest-revision list of the benchmark's objects fetches."""
    from apiserver.storage.sqlite import _LIST_LATEST

    sql = _LIST_LATEST.format(upper="AND c.name < ?")
    args = ("/registry/configmaps/bench/", "/registry/configmaps/bench0", -1)
    rows: list[tuple[int, bytes]] = conn.execute(sql, args).fetchall()
    assert len(rows) == CREATES, len(rows)
    return rows


def raw_sqlite_list(path: Path) -> float:
    """Median ms of the list's SQL alone (rows fetched, values not decoded)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA mmap_size = 1073741824")  # as the store's readers do
        samples = []
        for _ in range(LIST_ROUNDS):
            started = time.perf_counter()
            _bench_rows(conn)
            samples.append((time.perf_counter() - started) * 1e3)
        return statistics.median(samples)
    finally:
        conn.close()


def decode_ms(path: Path) -> float:
    """Median ms of decoding the listed values alone (orjson, cyclic GC paused)."""
    import gc

    conn = sqlite3.connect(path)
    try:
        values = [value for _id, value in _bench_rows(conn)]
    finally:
        conn.close()
    samples = []
    for _ in range(LIST_ROUNDS):
        gc.disable()
        try:
            started = time.perf_counter()
            decoded = [orjson.loads(value) for value in values]
            samples.append((time.perf_counter() - started) * 1e3)
        finally:
            gc.enable()
        del decoded
    return statistics.median(samples)


# -- etcd ------------------------------------------------------------------------------


async def raw_etcd_creates(endpoint: str, prefix: str, concurrency: int) -> Rate:
    """txn create-if-absent puts of the same bytes through aetcd's own client API."""
    import aetcd

    host, _, port = endpoint.rpartition(":")
    client = aetcd.Client(
        host=host, port=int(port), options={"grpc.max_receive_message_length": -1}
    )
    await client.connect()
    values = [orjson.dumps(make_object(i)) for i in range(CREATES)]
    try:

        async def create(i: int) -> object:
            key = f"{prefix}cm-{i:05d}".encode()
            ok, _ = await client.transaction(
                compare=[client.transactions.create(key) == 0],
                success=[client.transactions.put(key, values[i])],
                failure=[],
            )
            assert ok
            return ok

        return await measure_rate(create, CREATES, concurrency)
    finally:
        await client.close()


async def raw_etcd_range_ms(endpoint: str, prefix: str) -> float:
    """Median ms of one Range over the listed keys (protobuf parsed, values not decoded)."""
    import aetcd
    from aetcd import rpc

    from apiserver.storage.etcd import range_end

    host, _, port = endpoint.rpartition(":")
    client = aetcd.Client(
        host=host, port=int(port), options={"grpc.max_receive_message_length": -1}
    )
    await client.connect()
    try:
        request = rpc.RangeRequest(key=prefix.encode(), range_end=range_end(prefix.encode()))

        async def once() -> object:
            response = await client.kvstub.Range(request)
            assert len(response.kvs) == CREATES
            return response

        return (await timed(once)).ms
    finally:
        await client.close()


async def etcd_figures(report: Report, directory: Path) -> None:
    from tests.support.etcd import etcd_binary, start_etcd

    section = report.section(
        "etcd store",
        note=(
            "`EtcdStorage` against Debian's etcd-server started here on loopback (default"
            " WAL fsync), sharing the 2 cores with the client. Baseline: the same aetcd"
            " client's own `transaction()` API doing txn create-if-absent puts of the same"
            f" bytes, at the same concurrency, in the same run; {CREATES:,} creates per round,"
            f" raw and ours alternating, the median of {ROUNDS} rounds each."
        ),
    )
    if etcd_binary() is None:
        section.row(
            "all figures", "not measured: etcd is not installed (apt-get install etcd-server)"
        )
        return
    server = await asyncio.to_thread(start_etcd, directory / "etcd-data")
    try:
        version = await asyncio.to_thread(_etcd_version)
        section.note += f" {version}."
        store = EtcdStorage([server.endpoint], compact_interval=0)
        await store.start()
        try:
            rounds: dict[str, list[Rate]] = {"raw1": [], "ours1": [], "rawN": [], "oursN": []}
            for concurrency, kind in ((1, "seq"), (CONCURRENCY, "c16")):
                size = "1" if concurrency == 1 else "N"
                for r in range(ROUNDS):
                    rounds[f"raw{size}"].append(
                        await raw_etcd_creates(server.endpoint, f"/raw/{kind}-{r}/", concurrency)
                    )
                    rounds[f"ours{size}"].append(
                        await creates(store, prefix_of(kind, r), concurrency)
                    )
            raw_seq, sequential = median(rounds["raw1"]), median(rounds["ours1"])
            raw_conc, concurrent = median(rounds["rawN"]), median(rounds["oursN"])
            raw_range = await raw_etcd_range_ms(server.endpoint, "/registry/configmaps/bench/")
            whole = await timed(lambda: list_whole(store, "/registry/configmaps/bench/"))
            paged = await timed(lambda: list_paged(store, "/registry/configmaps/bench/"))
            p50, p99 = await put_to_event(store, "/registry/events-bench/")
        finally:
            await store.close()
    finally:
        await asyncio.to_thread(server.stop)
    for label, mine, raw in (
        ("creates, 1 at a time", sequential, raw_seq),
        (f"creates, {CONCURRENCY} in flight", concurrent, raw_conc),
    ):
        share = mine.ops_per_s / raw.ops_per_s
        section.row(
            label,
            f"{mine} = {share:.0%} of raw",
            target=">= 80% of raw",
            baseline=f"raw aetcd txn puts: {raw}",
            ok=share >= 0.8,
        )
    section.row(
        f"list {CREATES:,} objects, whole",
        str(whole),
        baseline=f"raw Range of the same keys, values not decoded: {raw_range:.1f} ms",
    )
    section.row(f"list {CREATES:,} objects, pages of {PAGE}", str(paged))
    section.row(
        "put -> watch event",
        f"p50 {p50:.3f} ms, p99 {p99:.3f} ms",
        baseline=f"create acknowledged, 1 at a time: p50 {sequential.p50_ms:.3f} ms",
    )


def _etcd_version() -> str:
    import subprocess

    from tests.support.etcd import etcd_binary

    binary = etcd_binary()
    if binary is None:
        return ""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.splitlines()[0] if out.stdout else ""


def codec_figures(report: Report) -> None:
    """Why values are orjson: encode and decode of the benchmark objects, both libraries."""
    import json

    objects = [make_object(i) for i in range(CREATES)]
    encoded = [orjson.dumps(o) for o in objects]

    def stdlib_dumps(obj: RawObject) -> str:
        return json.dumps(obj, separators=(",", ":"))

    def cpu_ms(action: Callable[[], object]) -> float:
        samples = []
        for _ in range(3):
            started = time.thread_time()
            action()
            samples.append((time.thread_time() - started) * 1e3)
        return statistics.median(samples)

    section = report.section(
        "Stored values: JSON codec",
        note=f"CPU time for {CREATES:,} objects of {OBJECT_BYTES} B (median of 3).",
    )
    section.row(
        "encode with orjson (used)",
        f"{cpu_ms(lambda: [orjson.dumps(o) for o in objects]):.1f} ms",
        baseline=f"stdlib json: {cpu_ms(lambda: [stdlib_dumps(o) for o in objects]):.1f} ms",
    )
    section.row(
        "decode with orjson (used)",
        f"{cpu_ms(lambda: [orjson.loads(b) for b in encoded]):.1f} ms",
        baseline=f"stdlib json: {cpu_ms(lambda: [json.loads(b) for b in encoded]):.1f} ms",
    )


async def main(report: Report) -> None:
    """Entry for ``python -m bench``."""
    codec_figures(report)
    with tempfile.TemporaryDirectory(prefix="bench-storage-", dir=_scratch()) as tmp:
        await sqlite_figures(report, Path(tmp))
    with tempfile.TemporaryDirectory(prefix="bench-etcd-", dir=_scratch()) as tmp:
        await etcd_figures(report, Path(tmp))


def _scratch() -> str | None:
    """Measure on the disk the store would use by default (the repo's), not a tmpfs."""
    repo = Path(__file__).resolve().parents[1]
    return str(repo) if os.access(repo, os.W_OK) else None


if __name__ == "__main__":
    import sys

    from bench.__main__ import main as run

    sys.exit(run(["storage", *sys.argv[1:]]))
