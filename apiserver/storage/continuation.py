"""Key ranges and list continue tokens, shared by every backend.

A continue token is base64 of JSON ``{"v": "meta.k8s.io/v1", "rv": N, "start": K}``, as
kube-apiserver writes it: ``rv`` pins the revision of the whole list, ``start`` is the
next key to read, relative to the listed prefix.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import orjson

from apiserver.storage.interface import InvalidContinue

TOKEN_VERSION = "meta.k8s.io/v1"


def prefix_end(prefix: str) -> str:
    """The smallest key greater than every key starting with ``prefix`` ("" = no bound)."""
    chars = prefix
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            return chars[:-1] + chr(last + 1)
        chars = chars[:-1]
    return ""


@dataclass(frozen=True, slots=True)
class Continuation:
    revision: int
    start: str  # absolute key to resume from (inclusive)


def encode_token(prefix: str, revision: int, last_key: str) -> str:
    """The token for the page after the one ending at ``last_key``."""
    start = last_key[len(prefix) :] + "\x00"
    payload = orjson.dumps({"v": TOKEN_VERSION, "rv": revision, "start": start})
    return base64.urlsafe_b64encode(payload).decode("ascii").rstrip("=")


def decode_token(prefix: str, token: str) -> Continuation:
    """Parse a continue token for a list under ``prefix``; InvalidContinue if it is not one."""
    try:
        raw = token.encode("ascii")
        payload = orjson.loads(base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise InvalidContinue(prefix, f"continue key is not valid: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("v") != TOKEN_VERSION:
        raise InvalidContinue(prefix, "continue key is not valid: unknown version")
    revision = payload.get("rv")
    start = payload.get("start")
    if not isinstance(revision, int) or revision <= 0 or not isinstance(start, str):
        raise InvalidContinue(prefix, "continue key is not valid: missing rv or start")
    return Continuation(revision=revision, start=prefix + start)
