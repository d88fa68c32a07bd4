"""Open a store from a URL: ``sqlite:PATH`` (the embedded default) or ``etcd://H:P[,H:P...]``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from apiserver.storage.interface import Storage

USAGE = (
    "use sqlite:PATH (e.g. sqlite:state/minik8s.db or sqlite:///var/lib/minik8s/db.sqlite)"
    " or etcd://HOST:PORT[,HOST:PORT...] (e.g. etcd://127.0.0.1:2379)"
)


class StoreUrlError(ValueError):
    """The --store URL cannot be understood."""


def open_storage(url: str) -> Storage:
    """The store a URL names, not yet started (call ``await store.start()``)."""
    scheme, sep, rest = url.partition(":")
    if not sep or not rest:
        raise StoreUrlError(f"store URL {url!r} has no scheme; {USAGE}")
    scheme = scheme.lower()
    if scheme == "sqlite":
        return _open_sqlite(url)
    if scheme == "etcd":
        return _open_etcd(url)
    raise StoreUrlError(f"store URL {url!r}: unknown scheme {scheme!r}; {USAGE}")


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite:`` URL names: ``sqlite:rel/path``, ``sqlite:/abs`` or ``sqlite:///abs``."""
    scheme, _, rest = url.partition(":")
    if scheme.lower() != "sqlite":
        raise StoreUrlError(f"store URL {url!r} is not a sqlite: URL; {USAGE}")
    if rest.startswith("//"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise StoreUrlError(
                f"store URL {url!r} names host {parts.netloc!r}; SQLite is a local file: {USAGE}"
            )
        path = parts.path
    else:
        path = rest
    if not path or path in (":memory:", "/:memory:"):
        raise StoreUrlError(f"store URL {url!r} names no file; {USAGE}")
    return Path(path)


def _open_sqlite(url: str) -> Storage:
    from apiserver.storage.sqlite import SqliteStorage

    return SqliteStorage(sqlite_path(url))


def etcd_endpoints(url: str) -> list[str]:
    """``host:port`` of each endpoint in ``etcd://h1:p1,h2:p2`` (port 2379 when left out)."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() != "etcd" or not rest:
        raise StoreUrlError(f"store URL {url!r} is not an etcd:// URL; {USAGE}")
    endpoints = []
    for part in rest.rstrip("/").split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon:
            host, port = port, "2379"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise StoreUrlError(f"store URL {url!r}: bad endpoint {part!r}; {USAGE}")
        endpoints.append(f"{host}:{port}")
    return endpoints


def _open_etcd(url: str) -> Storage:
    from apiserver.storage.etcd import EtcdStorage

    return EtcdStorage(etcd_endpoints(url))
