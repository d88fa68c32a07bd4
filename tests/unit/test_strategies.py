"""Per-kind strategies: upstream's defaults, validation messages, update rules, field sets."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from apiserver.resources import Resource, builtin_index
from apiserver.strategy import (
    GenericStrategy,
    Strategy,
    decode_error,
    invalid_message,
    register_strategy,
    strategy_for,
    strict_decoding_message,
    unknown_fields,
    unregister_strategy,
)

INDEX = builtin_index()


def res(group: str, plural: str) -> Resource:
    found = INDEX.lookup(group, "v1", plural)
    assert found is not None
    return found


SERVICES = res("", "services")
PODS = res("", "pods")


def service(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "annotations": {"note": " as sent "}},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], **spec},
    }


def created(resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    strategy_for(resource).prepare_for_create(obj)
    return obj


def messages(resource: Resource, obj: dict[str, Any]) -> list[str]:
    return [str(c) for c in strategy_for(resource).validate(obj)]


def test_every_builtin_strategy_satisfies_the_protocol() -> None:
    for resource in INDEX.all():
        assert isinstance(strategy_for(resource), Strategy)


def test_service_defaults_are_upstreams() -> None:
    svc = created(SERVICES, service())
    assert svc["spec"] == {
        "selector": {"app": "web"},
        "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
        "type": "ClusterIP",
        "sessionAffinity": "None",
        "internalTrafficPolicy": "Cluster",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
    }
    assert svc["status"] == {"loadBalancer": {}}
    assert svc["metadata"]["generation"] == 1
    assert svc["metadata"]["annotations"] == {"note": " as sent "}
    assert messages(SERVICES, svc) == []


def test_invalid_service_name_is_the_message_kubectl_prints() -> None:
    svc = created(SERVICES, service())
    svc["metadata"]["name"] = "myService"
    causes = strategy_for(SERVICES).validate(svc)
    assert invalid_message(SERVICES, "myService", causes) == (
        'Service "myService" is invalid: metadata.name: Invalid value: "myService": a DNS-1035 '
        "label must consist of lower case alphanumeric characters or '-', start with an "
        "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
        "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
    )
    assert causes[0].reason == "FieldValueInvalid"


def test_service_port_problems_name_their_fields() -> None:
    svc = created(
        SERVICES,
        service(ports=[{"port": 70000, "targetPort": 8080}, {"port": 80, "protocol": "XTP"}]),
    )
    assert messages(SERVICES, svc) == [
        "spec.ports[0].name: Required value",
        "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
        "spec.ports[1].name: Required value",
        'spec.ports[1].protocol: Unsupported value: "XTP": supported values: "SCTP", "TCP", "UDP"',
    ]


def test_service_without_ports_and_bad_cluster_ip() -> None:
    svc = created(SERVICES, service(ports=[], clusterIP="10.0.0.300"))
    assert messages(SERVICES, svc) == [
        "spec.ports: Required value",
        'spec.clusterIPs[0]: Invalid value: "10.0.0.300": must be a valid IP address, '
        "(e.g. 10.9.8.7 or 2001:db8::ffff)",
    ]


def test_duplicate_service_ports_are_reported() -> None:
    svc = created(SERVICES, service(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}]))
    [cause] = strategy_for(SERVICES).validate(svc)
    assert (cause.reason, cause.field) == ("FieldValueDuplicate", "spec.ports[1]")


def test_cluster_ip_is_immutable_once_set_but_kept_when_omitted() -> None:
    strategy = strategy_for(SERVICES)
    old = created(SERVICES, service(clusterIP="10.96.0.10"))
    omitted = service()
    strategy.prepare_for_update(omitted, old)
    assert omitted["spec"]["clusterIP"] == "10.96.0.10"
    assert omitted["spec"]["clusterIPs"] == ["10.96.0.10"]
    assert strategy.validate_update(omitted, old) == []
    changed = service(clusterIP="10.96.0.11")
    strategy.prepare_for_update(changed, old)
    assert [str(c) for c in strategy.validate_update(changed, old)] == [
        'spec.clusterIP: Invalid value: "10.96.0.11": field is immutable'
    ]


def test_cluster_ip_can_be_set_once_by_the_allocator() -> None:
    strategy = strategy_for(SERVICES)
    old = created(SERVICES, service())
    new = copy.deepcopy(old)
    new["spec"]["clusterIP"] = "10.96.0.12"
    strategy.prepare_for_update(new, old)
    assert strategy.validate_update(new, old) == []
    assert new["spec"]["clusterIPs"] == ["10.96.0.12"]


def test_update_keeps_status_and_bumps_generation_only_on_spec_change() -> None:
    strategy = strategy_for(SERVICES)
    old = created(SERVICES, service())
    old["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}
    old["metadata"].update(uid="u1", creationTimestamp="2024-01-01T00:00:00Z")
    relabel = copy.deepcopy(old)
    relabel["metadata"]["labels"] = {"x": "y"}
    relabel["status"] = {}
    del relabel["metadata"]["uid"]
    strategy.prepare_for_update(relabel, old)
    assert relabel["metadata"]["generation"] == 1
    assert relabel["metadata"]["uid"] == "u1"
    assert relabel["status"] == old["status"]
    respec = copy.deepcopy(old)
    respec["spec"]["ports"].append({"name": "b", "port": 81})
    strategy.prepare_for_update(respec, old)
    assert respec["metadata"]["generation"] == 2
    assert respec["spec"]["ports"][1]["protocol"] == "TCP", "defaults apply on update too"


def test_status_update_keeps_spec_and_metadata() -> None:
    strategy = strategy_for(PODS)
    old = created(PODS, pod())
    new = copy.deepcopy(old)
    new["spec"]["nodeName"] = "elsewhere"
    new["metadata"]["labels"] = {"changed": "yes"}
    new["metadata"]["resourceVersion"] = "7"
    new["status"] = {"phase": "Running", "podIP": "10.0.0.5"}
    strategy.prepare_for_status_update(new, old)
    assert new["spec"] == old["spec"]
    assert "labels" not in new["metadata"]
    assert new["metadata"]["resourceVersion"] == "7"
    assert new["status"]["podIPs"] == [{"ip": "10.0.0.5"}]
    assert strategy.validate_status_update(new, old) == []


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default"},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}], **spec},
        "status": {"phase": "Running"},
    }


def test_pod_defaults_and_status_reset() -> None:
    obj = created(PODS, pod())
    assert obj["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    spec = obj["spec"]
    assert (spec["restartPolicy"], spec["dnsPolicy"], spec["schedulerName"]) == (
        "Always",
        "ClusterFirst",
        "default-scheduler",
    )
    container = spec["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    latest = created(PODS, pod(containers=[{"name": "c", "image": "nginx"}]))
    assert latest["spec"]["containers"][0]["imagePullPolicy"] == "Always"


def test_pod_validation() -> None:
    obj = created(
        PODS,
        pod(
            containers=[
                {"name": "web", "ports": [{"containerPort": 0, "name": "HTTP"}]},
                {
                    "name": "web",
                    "image": "x",
                    "volumeMounts": [{"name": "data", "mountPath": "/d"}],
                },
            ]
        ),
    )
    assert messages(PODS, obj) == [
        "spec.containers[0].image: Required value",
        'spec.containers[0].ports[0].name: Invalid value: "HTTP": must contain only '
        "alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        'spec.containers[0].ports[0].name: Invalid value: "HTTP": must contain at least one '
        "letter (a-z)",
        "spec.containers[0].ports[0].containerPort: Required value",
        'spec.containers[1].name: Duplicate value: "web"',
        'spec.containers[1].volumeMounts[0].name: Not found: "data"',
    ]


def test_pod_spec_is_immutable_except_images() -> None:
    strategy = strategy_for(PODS)
    old = created(PODS, pod())
    image = copy.deepcopy(old)
    image["spec"]["containers"][0]["image"] = "nginx:1.26"
    strategy.prepare_for_update(image, old)
    assert strategy.validate_update(image, old) == []
    node = copy.deepcopy(old)
    node["spec"]["nodeName"] = "n1"
    strategy.prepare_for_update(node, old)
    [cause] = strategy.validate_update(node, old)
    assert cause.field == "spec" and cause.reason == "FieldValueForbidden"


def test_type_errors_are_causes_and_decode_errors() -> None:
    svc = service(ports=[{"port": "80"}])
    assert decode_error(svc, SERVICES) == (
        'Service in version "v1" cannot be handled as a Service: spec.ports[0].port: '
        'Invalid value: "80": must be of type integer'
    )
    assert decode_error(service(), SERVICES) is None


def test_unknown_fields_are_found_for_strict_validation() -> None:
    svc = service()
    svc["spec"]["portz"] = [1]
    svc["spec"]["ports"][0]["bogus"] = True
    svc["metadata"]["labelz"] = {}
    paths = unknown_fields(svc, SERVICES)
    assert paths == ["metadata.labelz", "spec.ports[0].bogus", "spec.portz"]
    assert strict_decoding_message(SERVICES, ["spec.portz"]) == (
        'Service in version "v1" cannot be handled as a Service: strict decoding error: '
        'unknown field "spec.portz"'
    )
    volume_source = pod(volumes=[{"name": "d", "emptyDir": {}}])
    assert unknown_fields(volume_source, PODS) == []


def test_field_sets() -> None:
    obj = created(PODS, pod(nodeName="n1"))
    fields = strategy_for(PODS).field_set(obj)
    assert fields["metadata.name"] == "web-1"
    assert fields["spec.nodeName"] == "n1"
    assert fields["status.phase"] == "Pending"
    assert "spec.nodeName" in strategy_for(PODS).selectable_fields
    svc_fields = strategy_for(SERVICES).field_set(created(SERVICES, service()))
    assert svc_fields["spec.type"] == "ClusterIP"
    event = {
        "metadata": {"name": "e", "namespace": "default"},
        "involvedObject": {"kind": "Service", "name": "web", "namespace": "default", "uid": "u"},
        "reason": "Synced",
        "source": {"component": "ctl"},
        "type": "Normal",
    }
    event_fields = strategy_for(res("", "events")).field_set(event)
    assert event_fields["involvedObject.uid"] == "u"
    assert event_fields["source"] == "ctl"


def test_namespace_gets_phase_and_name_label() -> None:
    ns = created(res("", "namespaces"), {"metadata": {"name": "team-a"}})
    assert ns["status"] == {"phase": "Active"}
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-a"}
    bad = created(res("", "namespaces"), {"metadata": {"name": "team.a"}})
    assert messages(res("", "namespaces"), bad)[0].startswith(
        'metadata.name: Invalid value: "team.a": a lowercase RFC 1123 label'
    )


def test_endpointslice_validation() -> None:
    slices = INDEX.lookup("discovery.k8s.io", "v1", "endpointslices")
    assert slices is not None
    obj = created(
        slices,
        {
            "metadata": {"name": "web-1", "namespace": "default"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1", "fe80::1"]}, {"addresses": []}],
            "ports": [{"port": 8080}],
        },
    )
    assert obj["ports"] == [{"port": 8080, "name": "", "protocol": "TCP"}]
    assert messages(slices, obj) == [
        'endpoints[0].addresses[1]: Invalid value: "fe80::1": must be a valid IPv4 address',
        "endpoints[1].addresses: Required value: must contain at least 1 address",
    ]


def test_ipaddress_name_must_be_canonical_and_parent_ref_required() -> None:
    ips = INDEX.lookup("networking.k8s.io", "v1", "ipaddresses")
    assert ips is not None
    ok = {
        "metadata": {"name": "10.96.0.10"},
        "spec": {"parentRef": {"resource": "services", "namespace": "d", "name": "w"}},
    }
    assert messages(ips, created(ips, ok)) == []
    bad = created(ips, {"metadata": {"name": "2001:DB8::1"}, "spec": {}})
    assert messages(ips, bad) == [
        'metadata.name: Invalid value: "2001:DB8::1": must be a canonical format IP address',
        "spec.parentRef: Required value",
    ]
    moved = copy.deepcopy(ok)
    moved["spec"]["parentRef"]["name"] = "other"
    [cause] = strategy_for(ips).validate_update(moved, ok)
    assert cause.field == "spec.parentRef"


def test_tables_render_kubectl_columns() -> None:
    now = datetime(2024, 1, 1, 0, 5, 3, tzinfo=UTC)
    svc = created(SERVICES, service(clusterIP="10.96.0.10"))
    svc["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    definitions, rows = strategy_for(SERVICES).table([svc], wide=True, now=now)
    assert [d["name"] for d in definitions] == [
        "Name",
        "Type",
        "Cluster-IP",
        "External-IP",
        "Port(s)",
        "Age",
        "Selector",
    ]
    assert rows == [["web", "ClusterIP", "10.96.0.10", "<none>", "80/TCP", "5m3s", "app=web"]]
    running = created(PODS, pod())
    running["status"] = {
        "phase": "Running",
        "podIP": "10.0.0.5",
        "containerStatuses": [
            {"name": "web", "ready": True, "restartCount": 2, "state": {"running": {}}}
        ],
    }
    _, [row] = strategy_for(PODS).table([running], wide=True, now=now)
    assert row[:4] == ["web-1", "1/1", "Running", "2"]
    assert row[5:] == ["10.0.0.5", "<none>", "<none>", "<none>"]


def test_crd_strategies_can_be_registered_at_runtime() -> None:
    widgets = Resource("example.com", "v1", "Widget", "widgets", "widget", namespaced=True)
    assert isinstance(strategy_for(widgets), GenericStrategy)
    custom = GenericStrategy(namespaced=True, has_status=True)
    register_strategy("example.com", "Widget", custom)
    try:
        assert strategy_for(widgets) is custom
    finally:
        unregister_strategy("example.com", "Widget")


def test_service_status_ingress_ips_are_validated() -> None:
    strategy = strategy_for(SERVICES)
    old = created(SERVICES, service())
    new = copy.deepcopy(old)
    new["status"] = {"loadBalancer": {"ingress": [{"ip": "not-an-ip"}]}}
    strategy.prepare_for_status_update(new, old)
    assert [c.field for c in strategy.validate_status_update(new, old)] == [
        "status.loadBalancer.ingress[0].ip"
    ]
    assert [c.field for c in strategy.validate_update(new, old)] == [
        "status.loadBalancer.ingress[0].ip"
    ], "the status checks also run on a plain update of the status"


def test_bad_quantities_do_not_decode() -> None:
    obj = pod(containers=[{"name": "c", "image": "x", "resources": {"limits": {"cpu": "1x0m"}}}])
    message = decode_error(obj, PODS)
    assert message is not None
    assert message.endswith(
        "quantities must match the regular expression "
        "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )
    fine = pod(containers=[{"name": "c", "image": "x", "resources": {"limits": {"cpu": "100m"}}}])
    assert decode_error(fine, PODS) is None


def test_tolerations_are_validated_and_may_only_be_added() -> None:
    obj = created(
        PODS,
        pod(
            tolerations=[{"operator": "Exists", "value": "x"}, {"key": "a", "effect": "Sometimes"}]
        ),
    )
    assert [c.field for c in strategy_for(PODS).validate(obj)] == [
        "spec.tolerations[0].operator",
        "spec.tolerations[1].effect",
    ]
    strategy = strategy_for(PODS)
    old = created(PODS, pod(tolerations=[{"key": "a", "operator": "Exists"}]))
    added = copy.deepcopy(old)
    added["spec"]["tolerations"].append({"key": "b", "operator": "Exists"})
    strategy.prepare_for_update(added, old)
    assert strategy.validate_update(added, old) == []
    removed = copy.deepcopy(old)
    removed["spec"]["tolerations"] = []
    strategy.prepare_for_update(removed, old)
    assert [c.field for c in strategy.validate_update(removed, old)] == ["spec.tolerations"]
