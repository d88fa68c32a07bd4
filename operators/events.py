"""Posting core v1 Events about the objects the operators act on."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from minik8s.client import ApiClient, ClientError

logger = logging.getLogger(__name__)

COMPONENT = "minik8s-operators"


def event_body(
    involved: Mapping[str, Any], type_: str, reason: str, message: str, *, now: datetime
) -> dict[str, Any]:
    meta = involved.get("metadata") or {}
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.get('name') or 'object'}.{uuid.uuid4().hex[:16]}",
            "namespace": meta.get("namespace") or "default",
        },
        "involvedObject": {
            "apiVersion": involved.get("apiVersion") or "v1",
            "kind": involved.get("kind") or "Service",
            "name": meta.get("name"),
            "namespace": meta.get("namespace") or "default",
            "uid": meta.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT, "host": socket.gethostname()},
        "reportingComponent": COMPONENT,
        "reportingInstance": socket.gethostname(),
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post_event(
    api: ApiClient, involved: Mapping[str, Any], type_: str, reason: str, message: str
) -> None:
    """Post an Event; a failure is logged, never raised (Events are best effort)."""
    body = event_body(involved, type_, reason, message, now=datetime.now(UTC))
    try:
        await api.create("v1", "events", body, body["metadata"]["namespace"])
    except ClientError as exc:
        logger.warning("could not post Event %s about %s: %s", reason, body["involvedObject"], exc)
