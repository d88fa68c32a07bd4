"""The storage seam: one interface, two backends (embedded SQLite and etcd).

Storage carries raw dicts (already validated by the registry). Keys are plain strings
such as ``/registry/services/default/web``; a prefix list/watch covers every key that
starts with the prefix. Revisions are the store's global revision: strictly increasing,
never reset. The object's ``metadata.resourceVersion`` is written by the storage layer
on the way out (as a string), so callers never have to keep it in step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

RawObject = dict[str, Any]

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


class StorageError(Exception):
    """Base of every error the storage layer raises on purpose."""

    def __init__(self, key: str, message: str = "") -> None:
        super().__init__(message or key)
        self.key = key


class NotFound(StorageError):
    """The key does not exist (or no longer exists)."""


class AlreadyExists(StorageError):
    """create() on a key that already holds a live object."""


class Conflict(StorageError):
    """A precondition (resourceVersion or uid) did not hold."""


class Compacted(StorageError):
    """A read or watch asked for a revision older than the compacted revision."""

    def __init__(self, key: str, requested: int, compacted: int) -> None:
        super().__init__(
            key, f"required revision {requested} has been compacted (oldest kept: {compacted})"
        )
        self.requested = requested
        self.compacted = compacted


class InvalidContinue(StorageError):
    """A list continue token that this store did not write (or for another prefix)."""


class TooLargeRevision(StorageError):
    """A read asked for a revision the store has not reached yet."""

    def __init__(self, key: str, requested: int, current: int) -> None:
        super().__init__(key, f"too large resource version: {requested}, current: {current}")
        self.requested = requested
        self.current = current


class Unavailable(StorageError):
    """The backend cannot be reached (etcd down, database closed)."""


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list, read at one consistent revision.

    ``cont`` is the opaque continue token for the next page ("" when there is none);
    it pins ``revision``, so every page of one list sees the same snapshot.
    ``remaining`` is how many more items follow (None when the backend cannot tell).
    """

    items: list[RawObject]
    revision: int
    cont: str = ""
    remaining: int | None = None


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A change to one key. ``obj`` is the new state; for DELETED, the last state.

    ``obj["metadata"]["resourceVersion"]`` equals ``str(revision)``; for DELETED it is the
    revision of the delete itself, as kube-apiserver reports it.
    """

    type: EventType
    key: str
    obj: RawObject
    revision: int
    prev: RawObject | None = field(default=None, compare=False)


UpdateFn = Callable[[RawObject], RawObject]


@runtime_checkable
class Storage(Protocol):
    async def start(self) -> None:
        """Open connections / threads; idempotent."""

    async def close(self) -> None:
        """Release everything; open watches end."""

    async def current_revision(self) -> int: ...

    async def create(self, key: str, obj: RawObject) -> RawObject:
        """Store a new object; returns it with its resourceVersion. AlreadyExists."""

    async def get(self, key: str, *, revision: int = 0) -> RawObject:
        """The object at ``revision`` (0: latest). NotFound, Compacted."""

    async def list(self, prefix: str, *, revision: int = 0, limit: int = 0, cont: str = "") -> Page:
        """Live objects under prefix at one revision (0: latest), in key order.

        ``limit`` 0 means all. ``cont`` continues a previous page (its revision wins).
        Compacted when the revision (or the token's) is below the compacted revision.
        """

    async def guaranteed_update(
        self,
        key: str,
        update: UpdateFn,
        *,
        expect_rv: str | None = None,
        expect_uid: str | None = None,
    ) -> RawObject:
        """Read-modify-write by compare-and-swap, retried on races.

        ``update`` gets a deep copy of the current object and returns the new one; it may
        raise to abort (the error propagates). If the result equals the current object
        (ignoring resourceVersion) nothing is written and the current object is returned.
        ``expect_rv``/``expect_uid``: Conflict unless the current object matches.
        NotFound if the key is absent.
        """

    async def delete(
        self, key: str, *, expect_rv: str | None = None, expect_uid: str | None = None
    ) -> RawObject:
        """Delete; returns the last state with the delete's resourceVersion. NotFound, Conflict."""

    def watch(self, prefix: str, *, since: int) -> AsyncIterator[WatchEvent]:
        """Every change under prefix with revision > since, in order, none lost or doubled.

        ``since`` 0 means "from now". Raises Compacted (on first iteration) when
        ``since`` is older than the compacted revision. Ends when the store closes.
        """

    async def compact(self, revision: int) -> None:
        """Forget history at or below ``revision`` (the current state stays)."""
