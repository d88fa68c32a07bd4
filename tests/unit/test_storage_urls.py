"""Store URLs (--store) and the helpers every backend shares: key ranges, continue tokens."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from apiserver.storage.continuation import decode_token, encode_token, prefix_end
from apiserver.storage.etcd import EtcdStorage, grpc_target, range_end
from apiserver.storage.factory import StoreUrlError, etcd_endpoints, open_storage, sqlite_path
from apiserver.storage.interface import InvalidContinue
from apiserver.storage.sqlite import SqliteStorage


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:state/minik8s.db", Path("state/minik8s.db")),
        ("sqlite:/var/lib/minik8s.db", Path("/var/lib/minik8s.db")),
        ("sqlite:///var/lib/minik8s.db", Path("/var/lib/minik8s.db")),
        ("SQLITE:db.sqlite", Path("db.sqlite")),
    ],
)
def test_sqlite_urls_name_a_file(url: str, path: Path) -> None:
    assert sqlite_path(url) == path
    store = open_storage(url)
    assert isinstance(store, SqliteStorage)
    assert store.path == path


@pytest.mark.parametrize(
    ("url", "endpoints"),
    [
        ("etcd://127.0.0.1:2379", ["127.0.0.1:2379"]),
        ("etcd://a:1,b:2/", ["a:1", "b:2"]),
        ("etcd://etcd.local", ["etcd.local:2379"]),
    ],
)
def test_etcd_urls_list_endpoints(url: str, endpoints: list[str]) -> None:
    assert etcd_endpoints(url) == endpoints
    store = open_storage(url)
    assert isinstance(store, EtcdStorage)
    assert store.endpoints == endpoints


@pytest.mark.parametrize(
    "url",
    [
        "",
        "minik8s.db",
        "sqlite:",
        "sqlite::memory:",
        "sqlite://otherhost/db",
        "etcd://",
        "etcd://h:x",
        "etcd://h:70000",
        "redis://localhost",
    ],
)
def test_bad_store_urls_say_what_is_accepted(url: str) -> None:
    with pytest.raises(StoreUrlError, match="sqlite:PATH"):
        open_storage(url)


def test_prefix_end_bounds_exactly_the_keys_under_a_prefix() -> None:
    assert prefix_end("/registry/pods/") == "/registry/pods0"
    assert prefix_end("") == ""
    assert "/registry/pods/x" < prefix_end("/registry/pods/") <= "/registry/pods0"
    assert range_end(b"/a/") == b"/a0"
    assert range_end(b"a\xff") == b"b"
    assert range_end(b"") == b"\0"


def test_continue_token_round_trips_and_is_kubernetes_shaped() -> None:
    token = encode_token("/registry/pods/", 42, "/registry/pods/ns/web")
    padded = token + "=" * (-len(token) % 4)
    payload = json.loads(base64.urlsafe_b64decode(padded))
    assert payload == {"v": "meta.k8s.io/v1", "rv": 42, "start": "ns/web\x00"}
    continuation = decode_token("/registry/pods/", token)
    assert continuation.revision == 42
    assert continuation.start == "/registry/pods/ns/web\x00"


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        base64.urlsafe_b64encode(b"[]").decode(),
        base64.urlsafe_b64encode(b'{"v":"other","rv":1,"start":""}').decode(),
        base64.urlsafe_b64encode(b'{"v":"meta.k8s.io/v1","rv":"1","start":""}').decode(),
    ],
)
def test_tokens_the_store_did_not_write_are_invalid(token: str) -> None:
    with pytest.raises(InvalidContinue):
        decode_token("/registry/pods/", token)


def test_grpc_target_for_several_endpoints_lists_addresses() -> None:
    assert grpc_target(["127.0.0.1:2379"]) == "127.0.0.1:2379"
    assert grpc_target(["127.0.0.1:2379", "127.0.0.2:2379"]) == "ipv4:127.0.0.1:2379,127.0.0.2:2379"
    assert grpc_target(["[::1]:2379", "[::1]:2380"]) == "ipv6:[::1]:2379,[::1]:2380"
