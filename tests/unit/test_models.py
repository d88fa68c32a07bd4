"""The shared models parse the Kubernetes wire format and give it back unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from minik8s.models import (
    KINDS,
    Container,
    EndpointSlice,
    IPAddress,
    ObjectMeta,
    Pod,
    PodSpec,
    PodStatus,
    Service,
    ServicePort,
    ServiceSpec,
    format_time,
    parse_time,
    wire_name,
)

SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "web",
        "namespace": "default",
        "labels": {"app": "web"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": '{"a":1}\n'},
        "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "u1"}],
    },
    "spec": {
        "clusterIP": "10.96.0.10",
        "clusterIPs": ["10.96.0.10"],
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "externalIPs": ["192.0.2.1"],
        "ports": [
            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
            {"name": "metrics", "port": 9100, "targetPort": "metrics"},
        ],
        "selector": {"app": "web"},
        "sessionAffinity": "None",
        "type": "ClusterIP",
    },
    "status": {"loadBalancer": {}},
}


@pytest.mark.parametrize(
    ("python", "wire"),
    [
        ("cluster_ip", "clusterIP"),
        ("cluster_ips", "clusterIPs"),
        ("pod_ip", "podIP"),
        ("host_ips", "hostIPs"),
        ("ip_families", "ipFamilies"),
        ("pod_cidrs", "podCIDRs"),
        ("container_id", "containerID"),
        ("host_pid", "hostPID"),
        ("target_port", "targetPort"),
        ("continue_", "continue"),
        ("uid", "uid"),
    ],
)
def test_wire_names_spell_acronyms_as_kubernetes_does(python: str, wire: str) -> None:
    assert wire_name(python) == wire


def test_service_round_trips_exactly() -> None:
    assert Service.model_validate(SERVICE).to_wire() == SERVICE


def test_service_fields_have_python_names() -> None:
    svc = Service.model_validate(SERVICE)
    assert svc.spec is not None and svc.spec.ports is not None
    assert svc.spec.cluster_ip == "10.96.0.10"
    assert svc.spec.ports[0].target_port == 8080
    assert svc.spec.ports[1].target_port == "metrics"
    assert svc.metadata.owner_references is not None
    assert svc.metadata.owner_references[0].api_version == "v1"


def test_unknown_fields_survive_a_round_trip() -> None:
    raw = {**SERVICE, "spec": {**SERVICE["spec"], "futureField": {"x": [1]}}}
    assert Service.model_validate(raw).to_wire() == raw


def test_models_built_in_python_dump_wire_names_and_gvk() -> None:
    pod = Pod(
        metadata=ObjectMeta(name="p", namespace="default"),
        spec=PodSpec(containers=[Container(name="c", image="nginx")], node_name="n1"),
        status=PodStatus(phase="Running", pod_ip="10.0.0.5"),
    )
    assert pod.to_wire() == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}], "nodeName": "n1"},
        "status": {"phase": "Running", "podIP": "10.0.0.5"},
    }


def test_wire_names_and_python_names_are_both_accepted() -> None:
    by_wire = ServiceSpec.model_validate({"clusterIP": "None"})
    by_name = ServiceSpec(cluster_ip="None")
    assert by_wire == by_name


def test_a_missing_required_field_is_an_error() -> None:
    with pytest.raises(ValidationError):
        ServicePort.model_validate({"name": "http"})


def test_endpointslice_and_ipaddress_parse() -> None:
    eps = EndpointSlice.model_validate(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }
    )
    assert eps.address_type == "IPv4"
    assert eps.endpoints[0].conditions is not None and eps.endpoints[0].conditions.ready
    ip = IPAddress.model_validate(
        {
            "metadata": {"name": "10.96.0.10"},
            "spec": {"parentRef": {"resource": "services", "namespace": "d", "name": "w"}},
        }
    )
    assert ip.api_version == "networking.k8s.io/v1"
    assert ip.spec is not None and ip.spec.parent_ref.resource == "services"


def test_every_kind_is_registered_by_group_and_kind() -> None:
    assert KINDS[("", "Service")] is Service
    assert KINDS[("discovery.k8s.io", "EndpointSlice")] is EndpointSlice
    assert len(KINDS) == 10


def test_timestamps_round_trip() -> None:
    moment = parse_time("2024-05-01T12:00:00Z")
    assert format_time(moment) == "2024-05-01T12:00:00Z"
    assert parse_time("2024-05-01T12:00:00.123456Z").microsecond == 123456
