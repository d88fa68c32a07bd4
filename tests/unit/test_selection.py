"""Endpoint selection: selectors, per-pod named ports, conditions, slices, diffs."""

from __future__ import annotations

from typing import Any

from operators import selection as sel

T = "2026-01-01T00:00:00Z"


def pod(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    ip: str | None = "10.2.0.1",
    ready: bool = True,
    deleting: bool = False,
    phase: str = "Running",
    containers: list[dict[str, Any]] | None = None,
    namespace: str = "default",
) -> sel.PodView:
    body: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "labels": {"app": "nginx"} if labels is None else labels,
        },
        "spec": {"nodeName": "node-1", "containers": containers or []},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }
    if ip:
        body["status"]["podIP"] = ip
        body["status"]["podIPs"] = [{"ip": ip}]
    if deleting:
        body["metadata"]["deletionTimestamp"] = T
    return sel.pod_view(body)


def service(
    *,
    selector: dict[str, str] | None = None,
    ports: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> sel.ServiceView:
    return sel.service_view(
        {
            "metadata": {"name": "web", "namespace": "default", "uid": "uid-web"},
            "spec": {
                "selector": {"app": "nginx"} if selector is None else selector,
                "ports": ports if ports is not None else [{"name": "http", "port": 80}],
                **spec,
            },
        }
    )


# The seed's pod: the second container exposes two ports, both named "nginx".
SEED_CONTAINERS = [
    {"name": "viewer", "image": "dplsming/nginx-fileserver:1.0"},
    {
        "name": "downloader",
        "image": "dplsming/aria2ng-downloader:1.0",
        "ports": [
            {"name": "nginx", "containerPort": 6800},
            {"name": "nginx", "containerPort": 6880},
        ],
    },
]


def test_selector_must_match_every_pair() -> None:
    sel_pairs = (("app", "nginx"), ("tier", "web"))
    assert sel.selector_matches(sel_pairs, {"app": "nginx", "tier": "web", "x": "y"})
    assert not sel.selector_matches(sel_pairs, {"app": "nginx"})
    assert not sel.selector_matches(sel_pairs, {"app": "nginx", "tier": "db"})


def test_empty_selector_matches_nothing_and_the_service_is_not_managed() -> None:
    assert not sel.selector_matches((), {"app": "nginx"})
    assert not service(selector={}).managed
    assert not service(type="ExternalName", externalName="example.com").managed


def test_seed_named_port_resolves_to_the_first_match_every_time() -> None:
    svc = service(
        ports=[{"name": "myPort", "protocol": "TCP", "port": 8080, "targetPort": "nginx"}]
    )
    p = pod("pod-example", containers=SEED_CONTAINERS)
    assert all(sel.resolve_target_port(svc.ports[0], p) == 6800 for _ in range(3))


def test_named_port_follows_container_order_then_port_order() -> None:
    containers = [
        {"name": "a", "ports": [{"name": "other", "containerPort": 1}]},
        {"name": "b", "ports": [{"name": "web", "containerPort": 8081}]},
        {"name": "c", "ports": [{"name": "web", "containerPort": 8082}]},
    ]
    svc = service(ports=[{"port": 80, "targetPort": "web"}])
    assert sel.resolve_target_port(svc.ports[0], pod("p", containers=containers)) == 8081


def test_named_port_must_match_the_protocol_too() -> None:
    containers = [
        {
            "name": "dns",
            "ports": [
                {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
                {"name": "dns", "containerPort": 5354, "protocol": "TCP"},
            ],
        }
    ]
    svc = service(
        ports=[
            {"name": "udp", "port": 53, "protocol": "UDP", "targetPort": "dns"},
            {"name": "tcp", "port": 53, "protocol": "TCP", "targetPort": "dns"},
            {"name": "sctp", "port": 53, "protocol": "SCTP", "targetPort": "dns"},
        ]
    )
    p = pod("p", containers=containers)
    assert [sel.resolve_target_port(sp, p) for sp in svc.ports] == [5353, 5354, None]


def test_numeric_and_absent_target_ports() -> None:
    svc = service(
        ports=[{"port": 80, "targetPort": 8080}, {"port": 81}, {"port": 82, "targetPort": "9090"}]
    )
    p = pod("p")
    assert [sel.resolve_target_port(sp, p) for sp in svc.ports] == [8080, 81, 9090]


def test_pod_without_the_named_port_is_left_out_of_that_port_and_reported() -> None:
    svc = service(
        ports=[
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "admin", "port": 81, "targetPort": "admin"},
        ]
    )
    with_admin = pod(
        "a",
        ip="10.2.0.1",
        containers=[{"name": "c", "ports": [{"name": "admin", "containerPort": 9000}]}],
    )
    without = pod("b", ip="10.2.0.2", containers=[{"name": "c"}])
    desired = sel.desired_state(svc, [with_admin, without], trigger_time=T)
    assert [u.pod for u in desired.unresolved] == ["b"]
    assert "no container port named 'admin'" in desired.unresolved[0].message()
    by_ports = {
        tuple(p["port"] for p in s["ports"]): [e["addresses"][0] for e in s["endpoints"]]
        for s in desired.slices
    }
    assert by_ports == {(8080, 9000): ["10.2.0.1"], (8080,): ["10.2.0.2"]}


def test_pod_resolving_no_port_is_not_an_endpoint() -> None:
    svc = service(ports=[{"port": 80, "targetPort": "missing"}])
    desired = sel.desired_state(svc, [pod("p")], trigger_time=T)
    assert desired.slices[0]["endpoints"] == []
    assert len(desired.unresolved) == 1


def test_only_matching_pods_with_an_ip_and_not_terminal_are_selected() -> None:
    pods = [
        pod("ok", ip="10.2.0.1"),
        pod("no-ip", ip=None),
        pod("done", ip="10.2.0.3", phase="Succeeded"),
        pod("other-app", ip="10.2.0.4", labels={"app": "db"}),
        pod("other-ns", ip="10.2.0.5", namespace="prod"),
    ]
    assert [p.name for p in sel.selected_pods(service(), pods)] == ["ok"]


def test_conditions_from_ready_and_deletion() -> None:
    assert sel.endpoint_conditions(pod("p")) == {
        "ready": True,
        "serving": True,
        "terminating": False,
    }
    assert sel.endpoint_conditions(pod("p", ready=False)) == {
        "ready": False,
        "serving": False,
        "terminating": False,
    }
    assert sel.endpoint_conditions(pod("p", deleting=True)) == {
        "ready": False,
        "serving": True,
        "terminating": True,
    }
    assert sel.endpoint_conditions(pod("p", ready=False), publish_not_ready=True)["ready"] is True


def test_seed_slice_carries_the_pod_ip_and_the_resolved_port() -> None:
    svc = service(
        ports=[{"name": "myPort", "protocol": "TCP", "port": 8080, "targetPort": "nginx"}]
    )
    desired = sel.desired_state(
        svc, [pod("pod-example", ip="10.2.16.5", containers=SEED_CONTAINERS)], trigger_time=T
    )
    [slice_] = desired.slices
    assert slice_["metadata"]["name"] == "web-0"
    assert slice_["metadata"]["labels"] == {
        sel.SERVICE_NAME_LABEL: "web",
        sel.MANAGED_BY_LABEL: "endpointslice-controller.minik8s.io",
    }
    assert slice_["metadata"]["annotations"] == {sel.TRIGGER_TIME_ANNOTATION: T}
    assert slice_["metadata"]["ownerReferences"][0]["uid"] == "uid-web"
    assert slice_["addressType"] == "IPv4"
    assert slice_["ports"] == [{"name": "myPort", "port": 6800, "protocol": "TCP"}]
    [ep] = slice_["endpoints"]
    assert ep["addresses"] == ["10.2.16.5"]
    assert ep["targetRef"]["name"] == "pod-example"
    assert ep["nodeName"] == "node-1"
    assert desired.endpoints["subsets"] == [
        {
            "addresses": [
                {
                    "ip": "10.2.16.5",
                    "nodeName": "node-1",
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": "default",
                        "name": "pod-example",
                        "uid": "uid-pod-example",
                    },
                }
            ],
            "ports": [{"name": "myPort", "port": 6800, "protocol": "TCP"}],
        }
    ]


def test_slices_hold_at_most_100_endpoints_named_by_position() -> None:
    pods = [pod(f"p{i:03}", ip=f"10.2.{i // 250}.{i % 250 + 1}") for i in range(250)]
    desired = sel.desired_state(service(), pods, trigger_time=T)
    assert [s["metadata"]["name"] for s in desired.slices] == ["web-0", "web-1", "web-2"]
    assert [len(s["endpoints"]) for s in desired.slices] == [100, 100, 50]
    names = [e["targetRef"]["name"] for s in desired.slices for e in s["endpoints"]]
    assert names == sorted(names) and len(set(names)) == 250


def test_service_without_endpoints_keeps_one_empty_slice() -> None:
    desired = sel.desired_state(service(), [], trigger_time=T)
    assert [(s["metadata"]["name"], s["endpoints"]) for s in desired.slices] == [("web-0", [])]
    assert desired.endpoints["subsets"] == []


def test_endpoints_object_leaves_terminating_pods_out_and_lists_not_ready_apart() -> None:
    pods = [
        pod("a", ip="10.2.0.1"),
        pod("b", ip="10.2.0.2", ready=False),
        pod("c", ip="10.2.0.3", deleting=True),
    ]
    desired = sel.desired_state(service(), pods, trigger_time=T)
    [subset] = desired.endpoints["subsets"]
    assert [a["ip"] for a in subset["addresses"]] == ["10.2.0.1"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.2.0.2"]
    assert len(desired.slices[0]["endpoints"]) == 3
    assert desired.endpoints["metadata"]["labels"][sel.SKIP_MIRROR_LABEL] == "true"


def test_ipv6_family_uses_the_pods_ipv6_address() -> None:
    body = {
        "metadata": {"name": "p", "namespace": "default", "uid": "u", "labels": {"app": "nginx"}},
        "spec": {},
        "status": {
            "podIP": "10.2.0.1",
            "podIPs": [{"ip": "10.2.0.1"}, {"ip": "fd00::5"}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    svc = service(ipFamilies=["IPv4", "IPv6"])
    desired = sel.desired_state(svc, [sel.pod_view(body)], trigger_time=T)
    assert [
        (s["metadata"]["name"], s["addressType"], s["endpoints"][0]["addresses"])
        for s in desired.slices
    ] == [("web-0", "IPv4", ["10.2.0.1"]), ("web-ipv6-0", "IPv6", ["fd00::5"])]


def test_no_changes_when_only_the_trigger_time_differs() -> None:
    before = sel.desired_state(service(), [pod("a")], trigger_time=T)
    after = sel.desired_state(service(), [pod("a")], trigger_time="2026-02-02T00:00:00Z")
    current = {s["metadata"]["name"]: s for s in before.slices}
    assert not sel.slice_changes(after.slices, current)
    assert sel.endpoints_essence(before.endpoints) == sel.endpoints_essence(after.endpoints)


def test_changes_create_update_and_delete_by_name() -> None:
    pods = [pod(f"p{i:03}", ip=f"10.2.0.{i + 1}") for i in range(150)]
    before = sel.desired_state(service(), pods, trigger_time=T)
    current = {s["metadata"]["name"]: s for s in before.slices}
    fewer = sel.desired_state(service(), pods[:100], trigger_time=T)
    changes = sel.slice_changes(fewer.slices, current)
    assert (changes.create, changes.update, changes.delete) == ([], [], ["web-1"])
    more = sel.desired_state(service(), [*pods, pod("z", ip="10.2.1.1")], trigger_time=T)
    changes = sel.slice_changes(more.slices, current)
    assert [s["metadata"]["name"] for s in changes.update] == ["web-1"]
    not_ready = sel.desired_state(
        service(), [pod("p000", ip="10.2.0.1", ready=False), *pods[1:]], trigger_time=T
    )
    assert [s["metadata"]["name"] for s in sel.slice_changes(not_ready.slices, current).update] == [
        "web-0"
    ]
