"""Storage backends behind one interface; only the apiserver imports this package."""

from apiserver.storage.interface import (
    AlreadyExists,
    Compacted,
    Conflict,
    NotFound,
    Page,
    RawObject,
    Storage,
    StorageError,
    Unavailable,
    WatchEvent,
)

__all__ = [
    "AlreadyExists",
    "Compacted",
    "Conflict",
    "NotFound",
    "Page",
    "RawObject",
    "Storage",
    "StorageError",
    "Unavailable",
    "WatchEvent",
]
