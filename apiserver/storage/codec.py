"""How objects are stored: compact JSON without ``metadata.resourceVersion``.

The revision is not part of the stored bytes; it is stamped on every object on the way
out, so the stored value never disagrees with the revision of the row or key holding it.
orjson is used because a 10k-object list spends most of its time decoding (about 4x
faster than the stdlib, 20x for encoding; see docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any

import orjson

from apiserver.storage.interface import RawObject


def encode(obj: RawObject) -> bytes:
    """Compact JSON of ``obj`` with ``metadata.resourceVersion`` left out."""
    return orjson.dumps(strip_revision(obj))


def decode(data: bytes, revision: int) -> RawObject:
    """A fresh object from stored bytes, its resourceVersion set to ``revision``."""
    obj: RawObject = orjson.loads(data)
    return stamp(obj, revision)


def stamp(obj: RawObject, revision: int) -> RawObject:
    """Set ``metadata.resourceVersion`` in place and return ``obj``."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = obj["metadata"] = {}
    metadata["resourceVersion"] = str(revision)
    return obj


def strip_revision(obj: RawObject) -> RawObject:
    """A shallow copy of ``obj`` without ``metadata.resourceVersion`` (``obj`` is untouched)."""
    metadata = obj.get("metadata")
    if isinstance(metadata, dict) and "resourceVersion" in metadata:
        metadata = {k: v for k, v in metadata.items() if k != "resourceVersion"}
        return {**obj, "metadata": metadata}
    return obj


def with_revision(obj: RawObject, revision: int) -> RawObject:
    """A shallow copy of ``obj`` (and of its metadata) carrying ``revision``."""
    metadata: dict[str, Any] = dict(obj.get("metadata") or {})
    metadata["resourceVersion"] = str(revision)
    return {**obj, "metadata": metadata}


def uid_of(obj: RawObject) -> str | None:
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        uid = metadata.get("uid")
        return uid if isinstance(uid, str) else None
    return None
