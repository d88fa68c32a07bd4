"""The etcd backend: the v3 API over gRPC, with aetcd's generated messages and stubs.

aetcd's high-level calls fall short of what Kubernetes semantics need (its range ignores
``revision`` and ``limit``, its watcher drops ``prev_kv`` on deletes unless asked and
hides progress notifications), so every request here is built from aetcd's own
generated messages (``aetcd.rpc``) and sent through its generated stubs on one gRPC
channel. gRPC's 4 MiB receive limit is lifted: a 10k-object list is about 11 MB.

Semantics, the same as the embedded store:

- create = txn(create_revision == 0) put; AlreadyExists when the compare fails.
- guaranteed_update = get, apply, txn(mod_revision == N) put, retried with the state the
  failed txn returned; a no-op update writes nothing.
- delete = txn(mod_revision == N) delete with prev_kv, so the last state comes back with
  the delete's revision.
- list = one range at one revision (the header's), ``limit`` + continue token pinning it;
  ``remaining`` comes from etcd's count.
- watch = one gRPC watch stream per call, from ``since + 1``, with prev_kv; a compacted
  start or a compaction overtaking the stream raises Compacted.
- compaction = etcd's compact; a periodic task compacts to ``current - compact_retain``
  and several apiservers sharing one etcd take turns through a txn on
  ``<prefix>compact_rev_key``, as kube-apiserver does.

``prefix`` is prepended to every key in etcd (kube-apiserver's ``--etcd-prefix``); our
keys already start with ``/registry``, so the default is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any, Final

import grpc
from aetcd import rpc

from apiserver.storage import codec
from apiserver.storage.continuation import decode_token, encode_token
from apiserver.storage.interface import (
    AlreadyExists,
    Compacted,
    NotFound,
    Page,
    RawObject,
    StorageError,
    TooLargeRevision,
    Unavailable,
    UpdateFn,
    WatchEvent,
)
from apiserver.storage.preconditions import check_preconditions

logger = logging.getLogger(__name__)

CHANNEL_OPTIONS: Final = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]

_CREATE = rpc.Compare.CompareTarget.Value("CREATE")
_MOD = rpc.Compare.CompareTarget.Value("MOD")
_VERSION = rpc.Compare.CompareTarget.Value("VERSION")
_EQUAL = rpc.Compare.CompareResult.Value("EQUAL")
_DELETE_EVENT = rpc.Event.EventType.Value("DELETE")


def range_end(key: bytes) -> bytes:
    """etcd's range end for "every key starting with ``key``" (b"\\0" = to the end)."""
    end = bytearray(key)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def grpc_target(endpoints: list[str]) -> str:
    """One gRPC target for ``host:port`` endpoints (several: addresses, first healthy wins)."""
    if not endpoints:
        raise ValueError("no etcd endpoints given; pass at least one HOST:PORT")
    if len(endpoints) == 1:
        return endpoints[0]
    addresses: list[str] = []
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        host = host.strip("[]")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            infos = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
            ip = ipaddress.ip_address(infos[0][4][0])
        addresses.append(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}")
    scheme = "ipv6" if any(a.startswith("[") for a in addresses) else "ipv4"
    return f"{scheme}:{','.join(addresses)}"


class EtcdStorage:
    """Storage on etcd v3 (see the module docstring)."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        prefix: str = "",
        timeout: float = 30.0,
        compact_interval: float = 300.0,
        compact_retain: int = 1000,
    ) -> None:
        self.endpoints = list(endpoints)
        self.prefix = prefix
        self.timeout = timeout
        self.compact_interval = compact_interval
        self.compact_retain = compact_retain
        self._prefix_bytes = prefix.encode()
        self._channel: grpc.aio.Channel | None = None
        self._kv: Any = None
        self._watch_stub: Any = None
        self._watches: set[Any] = set()
        self._compacted = 0  # the highest compacted revision this client has seen
        self._compactor: asyncio.Task[None] | None = None
        self._closed = False
        self._closing: asyncio.Future[None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._channel is not None:
            return
        if self._closed:
            raise Unavailable("", "the etcd store was closed; open a new one")
        target = grpc_target(self.endpoints)
        self._closing = asyncio.get_running_loop().create_future()
        self._channel = rpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self._kv = rpc.KVStub(self._channel)
        self._watch_stub = rpc.WatchStub(self._channel)
        try:
            revision = await self._current(wait_for_ready=True, deadline=min(self.timeout, 10.0))
        except Unavailable:
            await self._channel.close()
            self._channel = self._kv = self._watch_stub = None
            raise
        if self.compact_interval > 0:
            self._compactor = asyncio.create_task(self._compact_periodically())
        logger.info("connected to etcd %s at revision %d", ",".join(self.endpoints), revision)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
        for call in list(self._watches):
            call.cancel()
        if self._channel is not None:
            await self._channel.close()
        logger.info("closed connection to etcd %s", ",".join(self.endpoints))

    async def __aenter__(self) -> EtcdStorage:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _ready(self) -> Any:
        if self._kv is None or self._closed:
            raise Unavailable("", "the etcd store is not open; call start()")
        return self._kv

    def _key(self, key: str) -> bytes:
        return self._prefix_bytes + key.encode()

    def _unkey(self, raw: bytes) -> str:
        return raw[len(self._prefix_bytes) :].decode()

    # -- reads -----------------------------------------------------------------------

    async def _current(self, *, wait_for_ready: bool = False, deadline: float = 0.0) -> int:
        request = rpc.RangeRequest(key=self._key("compact_rev_key"), keys_only=True, limit=1)
        try:
            response = await self._ready().Range(
                request, timeout=deadline or self.timeout, wait_for_ready=wait_for_ready
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, "") from exc
        return int(response.header.revision)

    async def current_revision(self) -> int:
        return await self._current()

    async def get(self, key: str, *, revision: int = 0) -> RawObject:
        request = rpc.RangeRequest(key=self._key(key), revision=revision)
        response = await self._call("Range", request, key, revision)
        if not response.kvs:
            raise NotFound(key)
        kv = response.kvs[0]
        return codec.decode(kv.value, kv.mod_revision)

    async def list(self, prefix: str, *, revision: int = 0, limit: int = 0, cont: str = "") -> Page:
        start = prefix
        if cont:
            continuation = decode_token(prefix, cont)
            revision, start = continuation.revision, continuation.start
        request = rpc.RangeRequest(
            key=self._key(start),
            range_end=range_end(self._key(prefix)),
            revision=revision,
            limit=limit,
        )
        response = await self._call("Range", request, prefix, revision)
        revision = revision or int(response.header.revision)
        items = codec.decode_all((kv.mod_revision, kv.value) for kv in response.kvs)
        next_token = ""
        remaining: int | None = None
        if response.more and response.kvs:
            next_token = encode_token(prefix, revision, self._unkey(response.kvs[-1].key))
            remaining = int(response.count) - len(response.kvs)
        return Page(items=items, revision=revision, cont=next_token, remaining=remaining)

    # -- writes ----------------------------------------------------------------------

    async def create(self, key: str, obj: RawObject) -> RawObject:
        raw = self._key(key)
        request = rpc.TxnRequest(
            compare=[rpc.Compare(key=raw, target=_CREATE, result=_EQUAL, create_revision=0)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=raw, value=codec.encode(obj)))],
        )
        response = await self._call("Txn", request, key)
        if not response.succeeded:
            raise AlreadyExists(key)
        return codec.with_revision(obj, int(response.header.revision))

    async def _latest(self, key: str) -> Any:
        response = await self._call("Range", rpc.RangeRequest(key=self._key(key)), key)
        return response.kvs[0] if response.kvs else None

    def _swap(self, key: str, kv: Any, op: Any) -> Any:
        """A txn doing ``op`` if ``key`` is still at ``kv``'s revision, else reading it."""
        raw = self._key(key)
        return rpc.TxnRequest(
            compare=[
                rpc.Compare(key=raw, target=_MOD, result=_EQUAL, mod_revision=kv.mod_revision)
            ],
            success=[op],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=raw))],
        )

    async def guaranteed_update(
        self,
        key: str,
        update: UpdateFn,
        *,
        expect_rv: str | None = None,
        expect_uid: str | None = None,
    ) -> RawObject:
        kv = await self._latest(key)
        while True:
            if kv is None:
                raise NotFound(key)
            current = codec.decode(kv.value, kv.mod_revision)
            check_preconditions(key, current, kv.mod_revision, expect_rv, expect_uid)
            updated = codec.strip_revision(update(codec.decode(kv.value, kv.mod_revision)))
            if updated == codec.strip_revision(current):
                return current
            put = rpc.RequestOp(
                request_put=rpc.PutRequest(key=self._key(key), value=codec.encode(updated))
            )
            response = await self._call("Txn", self._swap(key, kv, put), key)
            if response.succeeded:
                return codec.with_revision(updated, int(response.header.revision))
            logger.debug("update of %s lost a race at revision %d; retrying", key, kv.mod_revision)
            kvs = response.responses[0].response_range.kvs
            kv = kvs[0] if kvs else None

    async def delete(
        self, key: str, *, expect_rv: str | None = None, expect_uid: str | None = None
    ) -> RawObject:
        kv = await self._latest(key)
        while True:
            if kv is None:
                raise NotFound(key)
            last = codec.decode(kv.value, kv.mod_revision)
            check_preconditions(key, last, kv.mod_revision, expect_rv, expect_uid)
            op = rpc.RequestOp(
                request_delete_range=rpc.DeleteRangeRequest(key=self._key(key), prev_kv=True)
            )
            response = await self._call("Txn", self._swap(key, kv, op), key)
            if response.succeeded:
                revision = int(response.header.revision)
                deleted = response.responses[0].response_delete_range.prev_kvs
                if deleted:
                    return codec.decode(deleted[0].value, revision)
                return codec.stamp(last, revision)
            logger.debug("delete of %s lost a race at revision %d; retrying", key, kv.mod_revision)
            kvs = response.responses[0].response_range.kvs
            kv = kvs[0] if kvs else None

    # -- watch -----------------------------------------------------------------------

    async def watch(self, prefix: str, *, since: int) -> AsyncIterator[WatchEvent]:
        self._ready()
        assert self._closing is not None
        raw = self._key(prefix)
        create = rpc.WatchCreateRequest(
            key=raw,
            range_end=range_end(raw),
            start_revision=since + 1 if since > 0 else 0,
            prev_kv=True,
            progress_notify=True,
        )
        call = self._watch_stub.Watch(timeout=None)
        self._watches.add(call)
        try:
            # A write pending when close() cancels the call never wakes: race it with close.
            write = asyncio.ensure_future(call.write(rpc.WatchRequest(create_request=create)))
            await asyncio.wait({write, self._closing}, return_when=asyncio.FIRST_COMPLETED)
            if not write.done():
                write.cancel()
                return
            write.result()
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    if self._closed:
                        return
                    raise Unavailable(prefix, "etcd ended the watch stream; watch again")
                if response.compact_revision:
                    self._compacted = max(self._compacted, int(response.compact_revision))
                    raise Compacted(prefix, since, int(response.compact_revision))
                if response.canceled:
                    raise Unavailable(
                        prefix, f"etcd canceled the watch: {response.cancel_reason}; watch again"
                    )
                for event in response.events:
                    yield self._event(event)
        except asyncio.CancelledError:
            # close() cancels the gRPC call: the watch ends. A cancelled task still raises.
            task = asyncio.current_task()
            if self._closed and call.cancelled() and (task is None or not task.cancelling()):
                return
            raise
        except grpc.aio.AioRpcError as exc:
            if self._closed:
                return
            raise self._error(exc, prefix, since) from exc
        finally:
            self._watches.discard(call)
            if not call.done():
                call.cancel()

    def _event(self, event: Any) -> WatchEvent:
        kv = event.kv
        key = self._unkey(kv.key)
        revision = int(kv.mod_revision)
        prev = None
        if event.HasField("prev_kv"):
            prev = codec.decode(event.prev_kv.value, event.prev_kv.mod_revision)
        if event.type == _DELETE_EVENT:
            if prev is None:
                raise Unavailable(key, f"etcd sent a delete of {key} without its last state")
            obj = codec.decode(event.prev_kv.value, revision)
            return WatchEvent("DELETED", key, obj, revision, prev)
        obj = codec.decode(kv.value, revision)
        if kv.create_revision == kv.mod_revision:
            return WatchEvent("ADDED", key, obj, revision, None)
        return WatchEvent("MODIFIED", key, obj, revision, prev)

    # -- compaction --------------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        if revision <= self._compacted:
            return
        try:
            await self._ready().Compact(
                rpc.CompactionRequest(revision=revision), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            error = self._error(exc, "", revision)
            if not isinstance(error, Compacted):
                raise error from exc
        self._compacted = max(self._compacted, revision)
        logger.info("compacted etcd to revision %d", revision)

    async def _compact_periodically(self) -> None:
        """Compact every interval, as kube-apiserver does with several apiservers on one etcd.

        Each round claims the turn by a txn on the version of ``compact_rev_key``; the
        winner compacts to the revision seen one round earlier (at most
        ``current - compact_retain``), so a full interval of history is always kept.
        """
        marker = self._key("compact_rev_key")
        version = 0
        last_seen = 0
        while True:
            await asyncio.sleep(self.compact_interval)
            claim = rpc.TxnRequest(
                compare=[rpc.Compare(key=marker, target=_VERSION, result=_EQUAL, version=version)],
                success=[rpc.RequestOp(request_put=rpc.PutRequest(key=marker, value=b""))],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=marker))],
            )
            try:
                response = await self._call("Txn", claim, "compact_rev_key")
                current = int(response.header.revision)
                if not response.succeeded:
                    kvs = response.responses[0].response_range.kvs
                    version = int(kvs[0].version) if kvs else 0
                    last_seen = current
                    continue
                version += 1
                target = min(last_seen, current - self.compact_retain)
                last_seen = current
                if target > self._compacted:
                    await self.compact(target)
            except StorageError as exc:
                logger.warning("periodic compaction of etcd failed: %s", exc)

    # -- errors ------------------------------------------------------------------------

    async def _call(self, method: str, request: Any, key: str, revision: int = 0) -> Any:
        stub = self._ready()
        try:
            return await getattr(stub, method)(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, key, revision) from exc

    def _error(self, exc: grpc.aio.AioRpcError, key: str, revision: int = 0) -> StorageError:
        details = exc.details() or ""
        if "required revision has been compacted" in details:
            self._compacted = max(self._compacted, revision + 1)
            return Compacted(key, revision, self._compacted)
        if "future revision" in details:
            return TooLargeRevision(key, revision, 0)
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return Unavailable(
                key,
                f"etcd at {','.join(self.endpoints)} is unavailable ({details}); is it running?",
            )
        return Unavailable(key, f"etcd refused the request: {exc.code().name}: {details}")
