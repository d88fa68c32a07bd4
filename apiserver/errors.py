"""metav1.Status: every error the API answers with, built in one place.

The registry raises :class:`StatusError`; the HTTP layer turns it into a response whose
HTTP code equals ``code``. Storage errors are translated once, here, by
:func:`from_storage`, so no client ever sees a storage key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from apiserver.storage.interface import (
    AlreadyExists,
    Compacted,
    Conflict,
    NotFound,
    StorageError,
    Unavailable,
)


@dataclass(frozen=True, slots=True)
class StatusCause:
    """One reason for an Invalid (422) or a strict-decoding (400) failure."""

    reason: str
    message: str
    field: str = ""

    def to_wire(self) -> dict[str, str]:
        out = {"reason": self.reason, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


@dataclass(slots=True)
class StatusError(Exception):
    """An API error: HTTP ``code``, upstream ``reason``, and the details kubectl prints."""

    code: int
    reason: str
    message: str
    name: str = ""
    group: str = ""
    kind: str = ""
    causes: Sequence[StatusCause] = field(default_factory=tuple)
    retry_after_seconds: int | None = None

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    def __str__(self) -> str:
        return self.message

    def to_status(self) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = [c.to_wire() for c in self.causes]
        if self.retry_after_seconds is not None:
            details["retryAfterSeconds"] = self.retry_after_seconds
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if details:
            status["details"] = details
        return status


def success_status(*, name: str, group: str, kind: str, uid: str = "") -> dict[str, Any]:
    """The Status a DELETE may answer with when there is no object to return."""
    details: dict[str, Any] = {"name": name, "group": group, "kind": kind}
    if uid:
        details["uid"] = uid
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


# -- builders, named for upstream's reasons ---------------------------------------------


def _qualified(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, name: str, group: str = "") -> StatusError:
    return StatusError(
        404,
        "NotFound",
        f'{_qualified(plural, group)} "{name}" not found',
        name=name,
        group=group,
        kind=plural,
    )


def already_exists(plural: str, name: str, group: str = "") -> StatusError:
    return StatusError(
        409,
        "AlreadyExists",
        f'{_qualified(plural, group)} "{name}" already exists',
        name=name,
        group=group,
        kind=plural,
    )


def conflict(plural: str, name: str, group: str = "", detail: str = "") -> StatusError:
    detail = detail or (
        "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return StatusError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(plural, group)} "{name}": {detail}',
        name=name,
        group=group,
        kind=plural,
    )


def invalid(kind: str, name: str, causes: Sequence[StatusCause], group: str = "") -> StatusError:
    """422 Invalid, with kubectl's message shape (``Service "x" is invalid: f: msg``)."""
    parts = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
    if len(parts) == 1:
        summary = parts[0]
    else:
        summary = "[" + ", ".join(parts) + "]"
    qualified = f"{kind}.{group}" if group else kind
    return StatusError(
        422,
        "Invalid",
        f'{qualified} "{name}" is invalid: {summary}',
        name=name,
        group=group,
        kind=kind,
        causes=tuple(causes),
    )


def unprocessable(message: str) -> StatusError:
    """422 without causes: a JSON patch that cannot be applied (failed ``test``...)."""
    return StatusError(422, "Invalid", message)


def bad_request(message: str, causes: Sequence[StatusCause] = ()) -> StatusError:
    return StatusError(400, "BadRequest", message, causes=tuple(causes))


def forbidden(message: str, *, plural: str = "", name: str = "", group: str = "") -> StatusError:
    return StatusError(403, "Forbidden", message, name=name, group=group, kind=plural)


def method_not_supported(plural: str, verb: str, group: str = "") -> StatusError:
    return StatusError(
        405,
        "MethodNotAllowed",
        f"{verb} is not supported on resources of kind {_qualified(plural, group)!r}",
        group=group,
        kind=plural,
    )


def not_acceptable(message: str) -> StatusError:
    return StatusError(406, "NotAcceptable", message)


def unsupported_media_type(content_type: str, supported: Sequence[str]) -> StatusError:
    return StatusError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(supported)} (got {content_type or 'no Content-Type'})",
    )


def request_entity_too_large(limit: int) -> StatusError:
    return StatusError(
        413,
        "RequestEntityTooLarge",
        f"Request entity too large: limit is {limit} bytes; split the object or store "
        "large data elsewhere",
    )


def expired(message: str) -> StatusError:
    """410 Gone: a resourceVersion or continue token older than the store keeps."""
    return StatusError(410, "Expired", message)


def resource_not_found(path: str) -> StatusError:
    """404 for a URL that names no resource (kubectl prints 'could not find the resource')."""
    return StatusError(
        404, "NotFound", f"the server could not find the requested resource ({path})"
    )


def timeout(message: str) -> StatusError:
    return StatusError(504, "Timeout", message)


def service_unavailable(message: str) -> StatusError:
    return StatusError(503, "ServiceUnavailable", message, retry_after_seconds=1)


def internal(message: str) -> StatusError:
    return StatusError(500, "InternalError", message)


def from_storage(exc: StorageError, plural: str, name: str, group: str = "") -> StatusError:
    """The one translation of a storage error into a Status; never leaks the key."""
    if isinstance(exc, NotFound):
        return not_found(plural, name, group)
    if isinstance(exc, AlreadyExists):
        return already_exists(plural, name, group)
    if isinstance(exc, Conflict):
        return conflict(plural, name, group)
    if isinstance(exc, Compacted):
        return expired(f"too old resource version: {exc.requested} ({exc.compacted})")
    if isinstance(exc, Unavailable):
        return service_unavailable("the storage backend is unavailable; retry shortly")
    return internal(f"storage error on {_qualified(plural, group)} {name!r}: {type(exc).__name__}")
