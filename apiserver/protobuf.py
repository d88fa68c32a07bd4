"""Request bodies in Kubernetes' protobuf encoding, for the kinds kubectl sends that way.

``kubectl create configmap|namespace|service ...`` posts ``application/vnd.kubernetes.protobuf``
(and accepts JSON back). This decodes the envelope (``k8s\\0`` + runtime.Unknown) and the
messages of those kinds into the same wire-form dict a JSON body gives, from field tables
written after k8s.io/api's ``generated.proto`` (no generated code). Empty values are
dropped, as Go's ``omitempty`` JSON would; server-set fields (timestamps) are ignored.
Other kinds are refused with a hint to send JSON.
"""

from __future__ import annotations

import base64
from typing import Any, Union

MAGIC = b"k8s\x00"

# A message: field number -> (JSON name, kind, repeated). A kind is a scalar name or a
# nested message table.
Kind = Union[str, "Message"]
Message = dict[int, tuple[str, Kind, bool]]


class ProtobufError(ValueError):
    """The body is not a protobuf object this server can read."""


class UnsupportedKind(ProtobufError):
    """A well-formed protobuf body of a kind this server does not decode."""


TYPE_META: Message = {1: ("apiVersion", "string", False), 2: ("kind", "string", False)}
UNKNOWN: Message = {
    1: ("typeMeta", TYPE_META, False),
    2: ("raw", "raw", False),
    3: ("contentEncoding", "string", False),
    4: ("contentType", "string", False),
}
OWNER_REFERENCE: Message = {
    5: ("apiVersion", "string", False),
    1: ("kind", "string", False),
    3: ("name", "string", False),
    4: ("uid", "string", False),
    6: ("controller", "bool", False),
    7: ("blockOwnerDeletion", "bool", False),
}
OBJECT_META: Message = {
    1: ("name", "string", False),
    2: ("generateName", "string", False),
    3: ("namespace", "string", False),
    5: ("uid", "string", False),
    6: ("resourceVersion", "string", False),
    7: ("generation", "int", False),
    8: ("creationTimestamp", "skip", False),
    9: ("deletionTimestamp", "skip", False),
    10: ("deletionGracePeriodSeconds", "int", False),
    11: ("labels", "map", False),
    12: ("annotations", "map", False),
    13: ("ownerReferences", OWNER_REFERENCE, True),
    14: ("finalizers", "string", True),
    17: ("managedFields", "skip", True),
}
CONFIG_MAP: Message = {
    1: ("metadata", OBJECT_META, False),
    2: ("data", "map", False),
    3: ("binaryData", "mapbytes", False),
    4: ("immutable", "bool", False),
}
NAMESPACE: Message = {
    1: ("metadata", OBJECT_META, False),
    2: ("spec", {1: ("finalizers", "string", True)}, False),
    3: ("status", {1: ("phase", "string", False)}, False),
}
INT_OR_STRING: Message = {
    1: ("type", "int", False),
    2: ("intVal", "int", False),
    3: ("strVal", "string", False),
}
SERVICE_PORT: Message = {
    1: ("name", "string", False),
    2: ("protocol", "string", False),
    3: ("port", "int", False),
    4: ("targetPort", "intorstring", False),
    5: ("nodePort", "int", False),
    6: ("appProtocol", "string", False),
}
SERVICE_SPEC: Message = {
    1: ("ports", SERVICE_PORT, True),
    2: ("selector", "map", False),
    3: ("clusterIP", "string", False),
    4: ("type", "string", False),
    5: ("externalIPs", "string", True),
    7: ("sessionAffinity", "string", False),
    8: ("loadBalancerIP", "string", False),
    9: ("loadBalancerSourceRanges", "string", True),
    10: ("externalName", "string", False),
    11: ("externalTrafficPolicy", "string", False),
    12: ("healthCheckNodePort", "int", False),
    13: ("publishNotReadyAddresses", "bool", False),
    17: ("ipFamilyPolicy", "string", False),
    18: ("clusterIPs", "string", True),
    19: ("ipFamilies", "string", True),
    20: ("allocateLoadBalancerNodePorts", "bool", False),
    21: ("loadBalancerClass", "string", False),
    22: ("internalTrafficPolicy", "string", False),
}
SERVICE: Message = {
    1: ("metadata", OBJECT_META, False),
    2: ("spec", SERVICE_SPEC, False),
    3: ("status", "skip", False),
}
KINDS: dict[tuple[str, str], Message] = {
    ("v1", "ConfigMap"): CONFIG_MAP,
    ("v1", "Namespace"): NAMESPACE,
    ("v1", "Service"): SERVICE,
}


def decode_object(body: bytes) -> dict[str, Any]:
    """A protobuf-encoded object as its JSON wire form; ProtobufError when unreadable."""
    if not body.startswith(MAGIC):
        raise ProtobufError("a protobuf body starts with the 4 bytes k8s\\0")
    envelope = _message(body[len(MAGIC) :], UNKNOWN)
    type_meta = envelope.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    table = KINDS.get((api_version, kind))
    if table is None:
        raise UnsupportedKind(
            f"protobuf bodies are read for {', '.join(k for _, k in KINDS)} only, not "
            f"{api_version} {kind}; send the object as JSON or YAML"
        )
    if envelope.get("contentEncoding"):
        raise ProtobufError("encoded (compressed) protobuf bodies are not supported")
    obj = _message(envelope.get("raw", b""), table)
    return {"apiVersion": api_version, "kind": kind, **obj}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs: ints for varints and fixed fields, bytes otherwise."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtobufError("truncated field")
            out.append((number, data[pos : pos + length]))
            pos += length
        elif wire == 1:
            out.append((number, int.from_bytes(data[pos : pos + 8], "little")))
            pos += 8
        elif wire == 5:
            out.append((number, int.from_bytes(data[pos : pos + 4], "little")))
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _scalar(kind: str, value: int | bytes) -> Any:
    if kind in ("string", "raw"):
        if not isinstance(value, bytes):
            raise ProtobufError("expected a length-delimited field")
        return value if kind == "raw" else value.decode()
    if kind == "int":
        if not isinstance(value, int):
            raise ProtobufError("expected a varint field")
        return _signed(value)
    if kind == "bool":
        return bool(value)
    raise ProtobufError(f"unknown field kind {kind}")


def _entry(value: int | bytes, binary: bool) -> tuple[str, str]:
    if not isinstance(value, bytes):
        raise ProtobufError("a map entry must be length-delimited")
    parts = dict(_fields(value))
    key, item = parts.get(1, b""), parts.get(2, b"")
    if not isinstance(key, bytes) or not isinstance(item, bytes):
        raise ProtobufError("a map entry holds bytes")
    return key.decode(), base64.b64encode(item).decode() if binary else item.decode()


def _int_or_string(value: int | bytes) -> int | str:
    if not isinstance(value, bytes):
        raise ProtobufError("IntOrString is a message")
    parts = _message(value, INT_OR_STRING)
    if parts.get("type") == 1:
        return str(parts.get("strVal", ""))
    return int(parts.get("intVal", 0))


def _message(data: bytes, table: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, value in _fields(data):
        spec = table.get(number)
        if spec is None:
            continue  # a field this server does not know: ignored, as JSON's Ignore
        name, kind, repeated = spec
        if kind == "skip":
            continue
        if kind in ("map", "mapbytes"):
            key, item = _entry(value, kind == "mapbytes")
            out.setdefault(name, {})[key] = item
            continue
        if isinstance(kind, dict):
            if not isinstance(value, bytes):
                raise ProtobufError(f"{name} is a message")
            decoded: Any = _message(value, kind)
        elif kind == "intorstring":
            decoded = _int_or_string(value)
        else:
            decoded = _scalar(kind, value)
        if repeated:
            out.setdefault(name, []).append(decoded)
        else:
            out[name] = decoded
    return {k: v for k, v in out.items() if v not in ("", 0, False, None, {}, []) or k == "raw"}
