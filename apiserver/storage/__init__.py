"""Storage backends behind one interface; only the apiserver imports this package."""

from apiserver.storage.interface import (
    AlreadyExists,
    Compacted,
    Conflict,
    InvalidContinue,
    NotFound,
    Page,
    RawObject,
    Storage,
    StorageError,
    TooLargeRevision,
    Unavailable,
    WatchEvent,
)

__all__ = [
    "AlreadyExists",
    "Compacted",
    "Conflict",
    "InvalidContinue",
    "NotFound",
    "Page",
    "RawObject",
    "Storage",
    "StorageError",
    "TooLargeRevision",
    "Unavailable",
    "WatchEvent",
]
