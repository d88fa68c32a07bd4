"""JSON patch, merge patch and strategic merge patch, with upstream's merge keys."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from apiserver.patch import (
    PatchError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
    supports_strategic_merge,
)
from apiserver.resources import Resource, builtin_index

INDEX = builtin_index()
SERVICES = INDEX.lookup("", "v1", "services")
PODS = INDEX.lookup("", "v1", "pods")
SLICES = INDEX.lookup("discovery.k8s.io", "v1", "endpointslices")
WIDGETS = Resource("example.com", "v1", "Widget", "widgets", "widget", namespaced=True)
assert SERVICES is not None and PODS is not None and SLICES is not None


def live_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web", "tier": "frontend"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "old"},
            "finalizers": ["a.example.com/x"],
        },
        "spec": {
            "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            "selector": {"app": "web"},
            "type": "ClusterIP",
        },
    }


def test_kubectl_reapply_adds_a_port_by_merge_key() -> None:
    patch = {
        "metadata": {
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "new", "note": "c"},
            "labels": {"tier": "backend"},
        },
        "spec": {
            "$setElementOrder/ports": [{"port": 80}, {"port": 9100}],
            "ports": [{"port": 80, "targetPort": 9090}, {"name": "metrics", "port": 9100}],
        },
    }
    original = live_service()
    result = apply_strategic_merge_patch(original, patch, SERVICES)
    assert original == live_service(), "the input is not modified"
    assert result["spec"]["ports"] == [
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9090},
        {"name": "metrics", "port": 9100},
    ]
    assert result["metadata"]["labels"] == {"app": "web", "tier": "backend"}
    assert result["metadata"]["annotations"]["note"] == "c"
    assert result["spec"]["clusterIP"] == "10.96.0.10"


def test_kubectl_reapply_deletes_a_port_and_an_annotation() -> None:
    live = live_service()
    live["spec"]["ports"].append({"name": "metrics", "port": 9100, "protocol": "TCP"})
    live["metadata"]["annotations"]["note"] = "c"
    patch = {
        "metadata": {"annotations": {"note": None}},
        "spec": {
            "$setElementOrder/ports": [{"port": 80}],
            "ports": [{"port": 80, "targetPort": 8080}, {"$patch": "delete", "port": 9100}],
        },
    }
    result = apply_strategic_merge_patch(live, patch, SERVICES)
    assert [p["port"] for p in result["spec"]["ports"]] == [80]
    assert "note" not in result["metadata"]["annotations"]


def test_set_element_order_reorders_and_keeps_server_only_items_in_place() -> None:
    live = live_service()
    live["spec"]["ports"] = [{"port": 1}, {"port": 2}, {"port": 3}]
    patch = {"spec": {"$setElementOrder/ports": [{"port": 3}, {"port": 1}]}}
    result = apply_strategic_merge_patch(live, patch, SERVICES)
    ports = [p["port"] for p in result["spec"]["ports"]]
    assert [p for p in ports if p != 2] == [3, 1]
    assert sorted(ports) == [1, 2, 3]
    keep = {"spec": {"$setElementOrder/ports": [{"port": 1}, {"port": 3}]}}
    assert [
        p["port"] for p in apply_strategic_merge_patch(live, keep, SERVICES)["spec"]["ports"]
    ] == [
        1,
        2,
        3,
    ]


def test_finalizers_merge_as_a_set_and_delete_from_primitive_list() -> None:
    patch = {"metadata": {"finalizers": ["b.example.com/y", "a.example.com/x"]}}
    result = apply_strategic_merge_patch(live_service(), patch, SERVICES)
    assert result["metadata"]["finalizers"] == ["a.example.com/x", "b.example.com/y"]
    removal = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example.com/x"]}}
    assert apply_strategic_merge_patch(result, removal, SERVICES)["metadata"]["finalizers"] == [
        "b.example.com/y"
    ]


def pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "d"},
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "nginx:1",
                    "env": [{"name": "A", "value": "1"}],
                    "ports": [{"containerPort": 80}],
                },
                {"name": "side", "image": "busybox"},
            ],
            "tolerations": [{"key": "a"}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
        "status": {"conditions": [{"type": "Ready", "status": "False"}]},
    }


def test_pod_lists_merge_by_their_keys_and_tolerations_are_atomic() -> None:
    patch = {
        "spec": {
            "containers": [
                {"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]}
            ],
            "tolerations": [{"key": "b"}],
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    result = apply_strategic_merge_patch(pod(), patch, PODS)
    web, side = result["spec"]["containers"]
    assert web["image"] == "nginx:2"
    assert web["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert web["ports"] == [{"containerPort": 80}]
    assert side == {"name": "side", "image": "busybox"}
    assert result["spec"]["tolerations"] == [{"key": "b"}]
    assert result["status"]["conditions"] == [{"type": "Ready", "status": "True"}]


def test_retain_keys_clears_the_other_volume_source() -> None:
    patch = {
        "spec": {
            "volumes": [
                {"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/x"}}
            ]
        }
    }
    result = apply_strategic_merge_patch(pod(), patch, PODS)
    assert result["spec"]["volumes"] == [{"name": "data", "hostPath": {"path": "/x"}}]


def test_patch_replace_and_delete_directives_on_maps_and_lists() -> None:
    replace_map = {"spec": {"selector": {"$patch": "replace", "role": "db"}}}
    assert apply_strategic_merge_patch(live_service(), replace_map, SERVICES)["spec"][
        "selector"
    ] == {"role": "db"}
    delete_map = {"spec": {"selector": {"$patch": "delete"}}}
    assert (
        "selector" not in apply_strategic_merge_patch(live_service(), delete_map, SERVICES)["spec"]
    )
    replace_list = {"spec": {"ports": [{"$patch": "replace"}, {"port": 443}]}}
    assert apply_strategic_merge_patch(live_service(), replace_list, SERVICES)["spec"]["ports"] == [
        {"port": 443}
    ]


def test_endpointslice_lists_are_atomic() -> None:
    live = {"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": []}
    patch = {"endpoints": [{"addresses": ["10.0.0.2"]}]}
    assert apply_strategic_merge_patch(live, patch, SLICES)["endpoints"] == [
        {"addresses": ["10.0.0.2"]}
    ]


def test_custom_resources_have_no_strategic_merge_and_fall_back_to_merge_semantics() -> None:
    assert supports_strategic_merge(SERVICES)
    assert not supports_strategic_merge(WIDGETS)
    live = {"spec": {"items": [{"name": "a"}], "color": "red"}}
    result = apply_strategic_merge_patch(live, {"spec": {"items": [{"name": "b"}]}}, WIDGETS)
    assert result == {"spec": {"items": [{"name": "b"}], "color": "red"}}


def test_merge_key_missing_is_an_error() -> None:
    with pytest.raises(PatchError) as info:
        apply_strategic_merge_patch(live_service(), {"spec": {"ports": [{"name": "x"}]}}, SERVICES)
    assert info.value.code == 422


def test_merge_patch_is_rfc7386() -> None:
    live = {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"list": [1, 2], "x": 1}}
    patch = {"metadata": {"labels": {"a": None, "c": "3"}}, "spec": {"list": [3], "x": None}}
    assert apply_merge_patch(live, patch) == {
        "metadata": {"labels": {"b": "2", "c": "3"}},
        "spec": {"list": [3]},
    }
    with pytest.raises(PatchError) as info:
        apply_merge_patch(live, [1])
    assert info.value.code == 400


def test_json_patch_applies_and_a_failed_test_is_422() -> None:
    live = live_service()
    ops = [
        {"op": "test", "path": "/metadata/name", "value": "web"},
        {"op": "replace", "path": "/spec/ports/0/port", "value": 81},
        {"op": "add", "path": "/metadata/labels/new", "value": "x"},
    ]
    result = apply_json_patch(live, ops)
    assert result["spec"]["ports"][0]["port"] == 81
    assert result["metadata"]["labels"]["new"] == "x"
    assert live == live_service()
    with pytest.raises(PatchError) as failed:
        apply_json_patch(live, [{"op": "test", "path": "/metadata/name", "value": "other"}])
    assert failed.value.code == 422
    assert failed.value.message == "testing value /metadata/name failed: test failed"
    with pytest.raises(PatchError) as missing:
        apply_json_patch(live, [{"op": "remove", "path": "/spec/nothing"}])
    assert missing.value.code == 422


@pytest.mark.parametrize(
    "ops",
    [{"op": "add"}, [{"op": "frobnicate", "path": "/a"}], [{"path": "/a"}], [1]],
)
def test_malformed_json_patches_are_400(ops: Any) -> None:
    with pytest.raises(PatchError) as info:
        apply_json_patch(copy.deepcopy(live_service()), ops)
    assert info.value.code == 400
