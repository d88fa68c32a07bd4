"""Protobuf request bodies, as kubectl v1.32 sent them (bytes captured from its requests)."""

from __future__ import annotations

import pytest

from apiserver.protobuf import ProtobufError, UnsupportedKind, decode_object

CONFIGMAP = (
    b'k8s\x00\n\x0f\n\x02v1\x12\tConfigMap\x12\x1b\n\x11\n\x01x\x12\x00\x1a\x00"\x00*\x002\x008'
    b'\x00B\x00\x12\x06\n\x01a\x12\x01b\x1a\x00"\x00'
)
NAMESPACE = (
    b'k8s\x00\n\x0f\n\x02v1\x12\tNamespace\x12\x1b\n\x13\n\x03nsx\x12\x00\x1a\x00"\x00*\x002\x00'
    b'8\x00B\x00\x12\x00\x1a\x02\n\x00\x1a\x00"\x00'
)


def test_a_configmap_from_kubectl_create_configmap() -> None:
    assert decode_object(CONFIGMAP) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x"},
        "data": {"a": "b"},
    }


def test_a_namespace_from_kubectl_create_namespace() -> None:
    assert decode_object(NAMESPACE) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "nsx"},
    }


def test_other_kinds_are_refused_with_a_hint() -> None:
    pod = b"k8s\x00\n\t\n\x02v1\x12\x03Pod\x12\x00"
    with pytest.raises(UnsupportedKind, match="send the object as JSON or YAML"):
        decode_object(pod)


@pytest.mark.parametrize("body", [b"{}", b"k8s\x00\n\xff", CONFIGMAP[:-5]])
def test_garbage_is_a_protobuf_error(body: bytes) -> None:
    with pytest.raises(ProtobufError):
        decode_object(body)
