"""The endpoint reconciler's bookkeeping: which Services a pod touches, stale slice events."""

from __future__ import annotations

from typing import Any

from minik8s.client import ApiClient
from operators import endpoint_operator as eo
from operators import selection as sel


def _pod(name: str, labels: dict[str, str]) -> sel.PodView:
    return sel.pod_view({"metadata": {"name": name, "namespace": "ns", "labels": labels}})


def _svc(name: str, selector: dict[str, str]) -> sel.ServiceView:
    return sel.service_view(
        {"metadata": {"name": name, "namespace": "ns"}, "spec": {"selector": selector}}
    )


def _slice(name: str, rv: str, ips: list[str]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": rv,
            "labels": {sel.SERVICE_NAME_LABEL: "web", sel.MANAGED_BY_LABEL: sel.CONTROLLER_NAME},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip]} for ip in ips],
        "ports": [],
    }


def _reconciler() -> eo.EndpointReconciler:
    return eo.EndpointReconciler(ApiClient("http://127.0.0.1:1"))


def test_a_pod_touches_services_selecting_it_now_and_those_that_held_it() -> None:
    r = _reconciler()
    web, db = _svc("web", {"app": "web"}), _svc("db", {"app": "db", "tier": "x"})
    index: dict[eo.LabelKey, list[sel.ServiceView]] = {
        ("ns", "app", "web"): [web],
        ("ns", "app", "db"): [db],
        ("ns", "tier", "x"): [db],
    }
    assert r.services_of_pod(_pod("p", {"app": "web"}), index) == {"web"}  # type: ignore[arg-type]
    assert r.services_of_pod(_pod("p", {"app": "db"}), index) == set()  # type: ignore[arg-type]
    r.pod_services[("ns", "p")] = {"old"}
    assert r.services_of_pod(_pod("p", {"app": "db", "tier": "x"}), index) == {"old", "db"}  # type: ignore[arg-type]


def test_candidate_pods_come_from_the_smallest_selector_bucket() -> None:
    a, b = _pod("a", {"app": "web", "tier": "x"}), _pod("b", {"app": "web"})
    index = {("ns", "app", "web"): [a, b], ("ns", "tier", "x"): [a]}
    svc = _svc("web", {"app": "web", "tier": "x"})
    assert eo.candidate_pods(svc, index) == [a]  # type: ignore[arg-type]
    assert eo.candidate_pods(_svc("none", {"app": "nope"}), index) == []  # type: ignore[arg-type]


def test_own_and_older_slice_events_do_not_trigger_a_reconcile() -> None:
    r = _reconciler()
    r.slices[("ns", "web")] = {"web-0": eo.trimmed_slice(_slice("web-0", "10", ["10.0.0.1"]))}
    assert r.observe_slice(_slice("web-0", "10", ["10.0.0.1"]), deleted=False) is None
    assert r.observe_slice(_slice("web-0", "9", ["10.0.0.9"]), deleted=False) is None


def test_a_foreign_change_or_deletion_triggers_a_reconcile() -> None:
    r = _reconciler()
    r.slices[("ns", "web")] = {"web-0": eo.trimmed_slice(_slice("web-0", "10", ["10.0.0.1"]))}
    assert r.observe_slice(_slice("web-0", "11", ["10.0.0.2"]), deleted=False) == ("ns", "web")
    assert r.slices[("ns", "web")]["web-0"]["endpoints"] == [{"addresses": ["10.0.0.2"]}]
    assert r.observe_slice(_slice("web-0", "12", []), deleted=True) == ("ns", "web")
    assert r.slices[("ns", "web")] == {}
