"""The apiserver on etcd (Debian's etcd-server on loopback): the same REST and watch rules.

Two apiservers share one etcd, as the design allows: a write through one is seen by the
other's list and watch, with the same resourceVersion.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.etcd import EtcdServer, etcd_endpoint, etcd_server
from tests.support.server import RunningApiserver, running_apiserver

__all__ = ["etcd_endpoint", "etcd_server"]

pytestmark = pytest.mark.etcd
SERVICES = "/api/v1/namespaces/default/services"
_names = itertools.count()


@pytest.fixture(scope="module")
def pair(etcd_server: EtcdServer) -> Iterator[tuple[RunningApiserver, RunningApiserver]]:
    store = f"etcd://{etcd_server.endpoint}"
    with running_apiserver(store) as first, running_apiserver(store) as second:
        yield first, second


def service(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}]},
    }


def test_crud_and_conflicts_on_etcd(pair: tuple[RunningApiserver, RunningApiserver]) -> None:
    first, second = pair
    name = f"etcd-{next(_names)}"
    with httpx.Client(base_url=first.url) as a, httpx.Client(base_url=second.url) as b:
        created = a.post(SERVICES, json=service(name)).json()
        seen = b.get(f"{SERVICES}/{name}").json()
        assert seen["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
        stale = dict(created, spec=dict(created["spec"], selector={"app": "x"}))
        assert b.put(f"{SERVICES}/{name}", json=stale).status_code == 200
        assert a.put(f"{SERVICES}/{name}", json=stale).status_code == 409
        assert a.post(SERVICES, json=service(name)).status_code == 409
        assert b.delete(f"{SERVICES}/{name}").status_code == 200
        assert a.get(f"{SERVICES}/{name}").status_code == 404


def test_a_write_through_one_apiserver_reaches_a_watch_on_the_other(
    pair: tuple[RunningApiserver, RunningApiserver],
) -> None:
    first, second = pair
    name = f"etcd-{next(_names)}"
    with httpx.Client(base_url=first.url) as a:
        rv = a.get(SERVICES).json()["metadata"]["resourceVersion"]
        params = {"watch": "true", "resourceVersion": rv, "fieldSelector": f"metadata.name={name}"}
        timeout = httpx.Timeout(10, read=10)
        with httpx.stream("GET", f"{second.url}{SERVICES}", params=params, timeout=timeout) as resp:
            created = a.post(SERVICES, json=service(name)).json()
            line = next(line for line in resp.iter_lines() if line.strip())
        event = json.loads(line)
        assert event["type"] == "ADDED"
        assert (
            event["object"]["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
        )


def test_list_pages_on_etcd(pair: tuple[RunningApiserver, RunningApiserver]) -> None:
    first, _ = pair
    path = "/api/v1/namespaces/default/configmaps"
    with httpx.Client(base_url=first.url) as a:
        for i in range(5):
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"page-{i}"}}
            assert a.post(path, json=body).status_code == 201
        names: list[str] = []
        cont = ""
        while True:
            params = {"limit": "2", **({"continue": cont} if cont else {})}
            page = a.get(path, params=params).json()
            names += [o["metadata"]["name"] for o in page["items"]]
            cont = page["metadata"].get("continue", "")
            if not cont:
                break
        assert [n for n in names if n.startswith("page-")] == [f"page-{i}" for i in range(5)]
