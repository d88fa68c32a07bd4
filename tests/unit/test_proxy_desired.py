"""Desired IPVS state from Services and EndpointSlices (pure)."""

from __future__ import annotations

from typing import Any

from proxy.desired import (
    DEFAULT_AFFINITY_TIMEOUT,
    DesiredTracker,
    ProxyConfig,
    desired_state,
    trigger_time,
)
from proxy.state import DestinationSpec, RealServer, ServiceSpec, Touched, VirtualServer

CONFIG = ProxyConfig.from_strings(["10.96.0.0/12"])


def service(
    name: str = "web",
    ip: str | None = "10.96.0.10",
    ports: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ports": ports if ports is not None else [{"name": "http", "port": 80, "targetPort": "web"}]
    }
    if ip is not None:
        body["clusterIP"] = ip
    body.update(spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": body,
    }


def endpoint(ip: str, ready: bool | None = True, **conditions: bool) -> dict[str, Any]:
    conds: dict[str, bool] = dict(conditions)
    if ready is not None:
        conds["ready"] = ready
    return {"addresses": [ip], "conditions": conds}


def endpoint_slice(
    name: str,
    endpoints: list[dict[str, Any]],
    ports: list[dict[str, Any]] | None = None,
    service_name: str = "web",
    **metadata: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service_name},
            **metadata,
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports
        if ports is not None
        else [{"name": "http", "port": 12345, "protocol": "TCP"}],
    }


VS = VirtualServer("10.96.0.10", 80, "TCP")


def test_a_cluster_ip_port_becomes_a_virtual_server_with_ready_endpoints_on_the_named_port() -> (
    None
):
    state = desired_state([service()], [endpoint_slice("web-a", [endpoint("10.2.16.5")])], CONFIG)
    assert set(state.services) == {VS}
    assert state.services[VS].spec == ServiceSpec("rr", 0)
    assert state.services[VS].destinations == {
        RealServer("10.2.16.5", 12345): DestinationSpec(weight=1, forwarding="masq")
    }
    assert state.addresses == {"10.96.0.10"}


def test_headless_external_name_and_foreign_cluster_ips_are_skipped() -> None:
    services = [
        service("headless", ip="None"),
        service("pending", ip=None),
        service("external", ip="10.96.0.11", type="ExternalName"),
        service("elsewhere", ip="192.168.1.10"),
    ]
    state = desired_state(services, [], CONFIG)
    assert state.services == {}
    assert state.addresses == set()


def test_a_service_without_endpoints_still_gets_its_virtual_server_and_vip() -> None:
    state = desired_state([service()], [], CONFIG)
    assert state.services[VS].destinations == {}
    assert state.addresses == {"10.96.0.10"}


def test_not_ready_endpoints_are_left_out_and_absent_readiness_counts_as_ready() -> None:
    endpoints = [
        endpoint("10.2.16.5", ready=True),
        endpoint("10.2.16.6", ready=False),
        endpoint("10.2.16.7", ready=None),
    ]
    state = desired_state([service()], [endpoint_slice("web-a", endpoints)], CONFIG)
    assert set(state.services[VS].destinations) == {
        RealServer("10.2.16.5", 12345),
        RealServer("10.2.16.7", 12345),
    }


def test_serving_terminating_endpoints_are_used_only_when_none_is_ready() -> None:
    draining = endpoint("10.2.16.6", ready=False, serving=True, terminating=True)
    only_draining = desired_state([service()], [endpoint_slice("a", [draining])], CONFIG)
    assert set(only_draining.services[VS].destinations) == {RealServer("10.2.16.6", 12345)}

    with_ready = desired_state(
        [service()], [endpoint_slice("a", [draining, endpoint("10.2.16.5")])], CONFIG
    )
    assert set(with_ready.services[VS].destinations) == {RealServer("10.2.16.5", 12345)}


def test_several_ports_are_matched_by_name_and_protocol() -> None:
    svc = service(
        ports=[
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "metrics", "port": 9090},
        ]
    )
    slice_ports = [
        {"name": "metrics", "port": 9100, "protocol": "TCP"},
        {"name": "dns", "port": 5353, "protocol": "UDP"},
        {"name": "http", "port": 8080, "protocol": "TCP"},
    ]
    state = desired_state(
        [svc], [endpoint_slice("a", [endpoint("10.2.16.5")], ports=slice_ports)], CONFIG
    )
    got = {vs: set(s.destinations) for vs, s in state.services.items()}
    assert got == {
        VirtualServer("10.96.0.10", 80, "TCP"): {RealServer("10.2.16.5", 8080)},
        VirtualServer("10.96.0.10", 53, "UDP"): {RealServer("10.2.16.5", 5353)},
        VirtualServer("10.96.0.10", 9090, "TCP"): {RealServer("10.2.16.5", 9100)},
    }
    assert state.addresses == {"10.96.0.10"}


def test_a_port_with_the_same_name_but_another_protocol_does_not_match() -> None:
    udp_only = [{"name": "http", "port": 8080, "protocol": "UDP"}]
    state = desired_state(
        [service()], [endpoint_slice("a", [endpoint("10.2.16.5")], ports=udp_only)], CONFIG
    )
    assert state.services[VS].destinations == {}


def test_endpoints_of_several_slices_are_merged_without_duplicates() -> None:
    slices = [
        endpoint_slice("a", [endpoint("10.2.16.5"), endpoint("10.2.16.6")]),
        endpoint_slice("b", [endpoint("10.2.16.6"), endpoint("10.2.17.5")]),
        endpoint_slice("other", [endpoint("10.9.9.9")], service_name="other"),
    ]
    state = desired_state([service()], slices, CONFIG)
    assert set(state.services[VS].destinations) == {
        RealServer("10.2.16.5", 12345),
        RealServer("10.2.16.6", 12345),
        RealServer("10.2.17.5", 12345),
    }


def test_client_ip_affinity_makes_the_service_persistent_with_its_timeout() -> None:
    default = desired_state([service(sessionAffinity="ClientIP")], [], CONFIG)
    assert default.services[VS].spec.persistence_timeout == DEFAULT_AFFINITY_TIMEOUT == 10800
    explicit = desired_state(
        [
            service(
                sessionAffinity="ClientIP",
                sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}},
            )
        ],
        [],
        CONFIG,
    )
    assert explicit.services[VS].spec == ServiceSpec("rr", 60)


def test_the_scheduler_is_configurable() -> None:
    config = ProxyConfig.from_strings(["10.96.0.0/12"], scheduler="wrr")
    state = desired_state([service()], [], config)
    assert state.services[VS].spec.scheduler == "wrr"


def test_trigger_time_is_read_from_the_slice_annotation() -> None:
    annotated = endpoint_slice(
        "a",
        [],
        annotations={"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-02T03:04:05Z"},
    )
    moment = trigger_time(annotated)
    assert moment is not None and moment.isoformat() == "2026-01-02T03:04:05+00:00"
    assert trigger_time(endpoint_slice("b", [])) is None


# ------------------------------------------------------------------ the incremental tracker


def test_the_tracker_reports_only_what_a_change_touched() -> None:
    tracker = DesiredTracker(CONFIG)
    tracker.upsert_service(service())
    tracker.upsert_service(service("api", ip="10.96.0.20"))
    tracker.upsert_slice(endpoint_slice("web-a", [endpoint("10.2.16.5")]))
    tracker.take_touched()

    tracker.upsert_slice(endpoint_slice("web-a", [endpoint("10.2.16.5"), endpoint("10.2.16.6")]))
    assert tracker.take_touched() == Touched(frozenset({VS}), frozenset())
    assert len(tracker.state.services[VS].destinations) == 2


def test_a_no_op_update_touches_nothing() -> None:
    tracker = DesiredTracker(CONFIG)
    tracker.upsert_service(service())
    tracker.take_touched()
    relabelled = service()
    relabelled["metadata"]["labels"] = {"team": "a"}
    tracker.upsert_service(relabelled)
    assert not tracker.take_touched()


def test_deleting_a_service_removes_its_virtual_servers_and_vip() -> None:
    tracker = DesiredTracker(CONFIG)
    tracker.upsert_service(service())
    tracker.take_touched()
    tracker.delete_service(service())
    assert tracker.state.services == {}
    assert tracker.state.addresses == set()
    assert tracker.take_touched() == Touched(frozenset({VS}), frozenset({"10.96.0.10"}))


def test_a_changed_cluster_ip_moves_the_virtual_server_and_the_vip() -> None:
    tracker = DesiredTracker(CONFIG)
    tracker.upsert_service(service())
    tracker.take_touched()
    tracker.upsert_service(service(ip="10.96.0.11"))
    moved = VirtualServer("10.96.0.11", 80, "TCP")
    assert set(tracker.state.services) == {moved}
    assert tracker.state.addresses == {"10.96.0.11"}
    assert tracker.take_touched() == Touched(
        frozenset({VS, moved}), frozenset({"10.96.0.10", "10.96.0.11"})
    )


def test_deleting_the_last_slice_empties_the_destinations() -> None:
    tracker = DesiredTracker(CONFIG)
    tracker.upsert_service(service())
    web_a = endpoint_slice("web-a", [endpoint("10.2.16.5")])
    tracker.upsert_slice(web_a)
    tracker.delete_slice(web_a)
    assert tracker.state.services[VS].destinations == {}


def test_slices_seen_before_their_service_are_used_once_it_arrives() -> None:
    tracker = DesiredTracker(CONFIG)
    tracker.upsert_slice(endpoint_slice("web-a", [endpoint("10.2.16.5")]))
    assert tracker.state.services == {}
    tracker.upsert_service(service())
    assert set(tracker.state.services[VS].destinations) == {RealServer("10.2.16.5", 12345)}
