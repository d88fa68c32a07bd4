"""CRDs and webhook configurations on etcd, with two apiservers sharing the store: what is
created through one is served, validated and enforced by the other."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.test_crd import CRDS, widget, widget_crd, widgets
from tests.support.etcd import EtcdServer, etcd_endpoint, etcd_server
from tests.support.poll import wait_for
from tests.support.server import running_apiserver

__all__ = ["etcd_endpoint", "etcd_server"]

pytestmark = pytest.mark.etcd
_groups = itertools.count()


@pytest.fixture(scope="module")
def pair(etcd_server: EtcdServer) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    store = f"etcd://{etcd_server.endpoint}"
    with running_apiserver(store) as first, running_apiserver(store) as second:
        with httpx.Client(base_url=first.url) as a, httpx.Client(base_url=second.url) as b:
            yield a, b


def served(client: httpx.Client, group: str) -> bool:
    return client.get(widgets(group)).status_code == 200


def test_a_crd_created_through_one_apiserver_is_served_by_both(
    pair: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = pair
    group = f"g{next(_groups)}.etcd.example.com"
    assert a.post(CRDS, json=widget_crd(group)).status_code == 201
    assert served(a, group)
    wait_for(lambda: served(b, group), what="the other apiserver to serve the kind")
    created = b.post(widgets(group), json=widget("shared", group, size=1))
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["color"] == "blue"  # the other apiserver's schema default
    assert (
        a.get(f"{widgets(group)}/shared").json()["metadata"]["uid"]
        == (created.json()["metadata"]["uid"])
    )
    invalid = b.post(widgets(group), json=widget("bad", group, size=0))
    assert invalid.status_code == 422, invalid.text

    assert b.delete(f"{CRDS}/widgets.{group}").status_code in (200, 202)
    wait_for(lambda: a.get(f"{CRDS}/widgets.{group}").status_code == 404, what="CRD gone")
    wait_for(lambda: not served(a, group) and not served(b, group), what="both to stop serving")


def test_a_webhook_configured_through_one_apiserver_is_called_by_the_other(
    pair: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = pair
    hook = {
        "name": "etcd.hooks.minik8s.test",
        "clientConfig": {"url": "http://127.0.0.1:9/unreachable"},
        "rules": [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["configmaps"],
            }
        ],
        "objectSelector": {"matchLabels": {"hook": "etcd"}},
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 1,
    }
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": f"etcd-{next(_groups)}"},
        "webhooks": [hook],
    }
    path = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
    assert a.post(path, json=config).status_code == 201

    def create_through_b() -> int:
        # A new name each time: a create admitted before b has seen the configuration
        # must not turn the later ones into 409s.
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{next(_groups)}", "labels": {"hook": "etcd"}},
        }
        status: int = b.post("/api/v1/namespaces/default/configmaps", json=body).status_code
        return status

    wait_for(
        lambda: create_through_b() == 500,
        what="the other apiserver to call the (unreachable) webhook",
    )
    assert a.delete(f"{path}/{config['metadata']['name']}").status_code == 200
    wait_for(lambda: create_through_b() == 201, what="the other apiserver to drop the webhook")
