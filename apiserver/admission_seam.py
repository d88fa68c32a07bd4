"""The admission seam: where webhooks (or any policy) mutate and vet writes.

The registry calls :meth:`Admission.mutate` after defaulting and before validation, and
:meth:`Admission.validate` after validation and before the object is stored, on create,
update, patch and delete (``subresource`` is ``"status"`` for a ``/status`` write, as in
AdmissionRequest.subResource). ``op`` is ``"CREATE" | "UPDATE" | "DELETE"`` as in
admission.k8s.io/v1's AdmissionRequest. A denial is :class:`AdmissionDenied`, which the
registry answers as a Status carrying the policy's own message (upstream's
``admission webhook "x" denied the request: ...``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from apiserver.resources import Resource

Operation = Literal["CREATE", "UPDATE", "DELETE"]


class AdmissionDenied(Exception):
    """A policy refused the request; ``code`` is the HTTP status (403 unless it says).

    ``reason`` None lets the registry pick upstream's reason for the code; a webhook's
    denial carries the webhook's own reason, empty when it gave none (as upstream, so that
    kubectl prints the webhook's message)."""

    def __init__(self, message: str, code: int = 403, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """One write, as admission sees it (upstream's admission.Attributes)."""

    op: Operation
    resource: Resource
    obj: dict[str, Any] | None
    old: dict[str, Any] | None
    namespace: str | None
    name: str
    dry_run: bool = False
    subresource: str = ""


class Admission(Protocol):
    async def mutate(self, request: AdmissionRequest) -> dict[str, Any] | None:
        """The object to store instead of ``request.obj``, or None to keep it as it is."""

    async def validate(self, request: AdmissionRequest) -> None:
        """Raise AdmissionDenied to refuse."""


class NoAdmission:
    """The default: every request is admitted unchanged."""

    async def mutate(self, request: AdmissionRequest) -> dict[str, Any] | None:
        return None

    async def validate(self, request: AdmissionRequest) -> None:
        return None
