"""The REST verbs on a real apiserver (uvicorn on 127.0.0.1:0, SQLite store)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.server import RunningApiserver, shared_apiserver

__all__ = ["shared_apiserver"]

SERVICES = "/api/v1/namespaces/default/services"
_names = itertools.count()


def unique(prefix: str = "svc") -> str:
    return f"{prefix}-{next(_names)}"


@pytest.fixture
def http(shared_apiserver: RunningApiserver) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_apiserver.url, timeout=10) as client:
        yield client


def service(name: str, port: int = 80, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port}]},
    }


def create(http: httpx.Client, body: dict[str, Any], path: str = SERVICES) -> dict[str, Any]:
    resp = http.post(path, json=body)
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


def test_default_and_kube_system_namespaces_exist_at_start(http: httpx.Client) -> None:
    names = {ns["metadata"]["name"] for ns in http.get("/api/v1/namespaces").json()["items"]}
    assert {"default", "kube-system"} <= names


def test_create_sets_uid_timestamp_generation_and_resource_version(http: httpx.Client) -> None:
    name = unique()
    created = create(http, service(name))
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    assert meta["namespace"] == "default"
    assert isinstance(meta["resourceVersion"], str) and int(meta["resourceVersion"]) > 0
    got = http.get(f"{SERVICES}/{name}").json()
    assert got["metadata"]["uid"] == meta["uid"]
    assert got["spec"]["type"] == "ClusterIP"
    assert got["spec"]["ports"][0]["protocol"] == "TCP"
    assert got["spec"]["ports"][0]["targetPort"] == 80


def test_annotations_are_stored_exactly_as_sent(http: httpx.Client) -> None:
    name = unique()
    body = service(name)
    odd = '{"apiVersion":"v1",\n "x": [1, 2]}\n'
    body["metadata"]["annotations"] = {"example.com/raw": odd, "empty": ""}
    create(http, body)
    got = http.get(f"{SERVICES}/{name}").json()
    assert got["metadata"]["annotations"] == {"example.com/raw": odd, "empty": ""}


def test_create_in_a_missing_namespace_is_404(http: httpx.Client) -> None:
    resp = http.post("/api/v1/namespaces/nowhere/services", json=service(unique()))
    assert resp.status_code == 404
    status = resp.json()
    assert status["kind"] == "Status" and status["reason"] == "NotFound"
    assert status["message"] == 'namespaces "nowhere" not found'


def test_generate_name_gives_a_fresh_name(http: httpx.Client) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"generateName": "cfg-"},
        "data": {"a": "b"},
    }
    first = create(http, body, "/api/v1/namespaces/default/configmaps")
    second = create(http, body, "/api/v1/namespaces/default/configmaps")
    assert first["metadata"]["name"].startswith("cfg-")
    assert first["metadata"]["name"] != second["metadata"]["name"]


def test_get_missing_names_the_resource_not_a_key(http: httpx.Client) -> None:
    resp = http.get(f"{SERVICES}/nope")
    assert resp.status_code == 404
    status = resp.json()
    assert status["message"] == 'services "nope" not found'
    assert status["details"] == {"name": "nope", "kind": "services"}


def test_create_twice_is_already_exists(http: httpx.Client) -> None:
    name = unique()
    create(http, service(name))
    resp = http.post(SERVICES, json=service(name))
    assert resp.status_code == 409
    assert resp.json()["reason"] == "AlreadyExists"
    assert resp.json()["message"] == f'services "{name}" already exists'


def test_put_with_a_stale_resource_version_is_409_and_changes_nothing(http: httpx.Client) -> None:
    name = unique()
    created = create(http, service(name))
    fresh = dict(created, spec=dict(created["spec"], selector={"app": "v2"}))
    updated = http.put(f"{SERVICES}/{name}", json=fresh)
    assert updated.status_code == 200, updated.text
    stale = dict(created, spec=dict(created["spec"], selector={"app": "v3"}))
    resp = http.put(f"{SERVICES}/{name}", json=stale)
    assert resp.status_code == 409
    assert resp.json()["reason"] == "Conflict"
    assert http.get(f"{SERVICES}/{name}").json()["spec"]["selector"] == {"app": "v2"}


def test_generation_is_bumped_by_spec_changes_only(http: httpx.Client) -> None:
    name = unique()
    created = create(http, service(name))
    created["metadata"]["labels"] = {"changed": "yes"}
    relabelled = http.put(f"{SERVICES}/{name}", json=created).json()
    assert relabelled["metadata"]["generation"] == 1
    relabelled["spec"]["selector"] = {"app": "other"}
    respecced = http.put(f"{SERVICES}/{name}", json=relabelled).json()
    assert respecced["metadata"]["generation"] == 2


def test_no_op_update_keeps_the_resource_version(http: httpx.Client) -> None:
    name = unique()
    created = create(http, service(name))
    again = http.put(f"{SERVICES}/{name}", json=created).json()
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_status_goes_through_the_status_subresource_only(http: httpx.Client) -> None:
    name = unique()
    created = create(http, service(name))
    lb = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    main = http.patch(
        f"{SERVICES}/{name}",
        json={"status": lb},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert main.status_code == 200
    assert main.json().get("status", {}).get("loadBalancer", {}).get("ingress") is None
    sub = http.patch(
        f"{SERVICES}/{name}/status",
        json={"status": lb, "spec": {"selector": {"app": "ignored"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert sub.status_code == 200, sub.text
    assert sub.json()["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.1"}]
    assert sub.json()["spec"]["selector"] == created["spec"]["selector"]


def test_json_patch_with_a_failed_test_is_422(http: httpx.Client) -> None:
    name = unique()
    create(http, service(name))
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/x"]},
    ]
    resp = http.patch(
        f"{SERVICES}/{name}", json=ops, headers={"Content-Type": "application/json-patch+json"}
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["kind"] == "Status"
    assert "finalizers" not in http.get(f"{SERVICES}/{name}").json()["metadata"]


def test_json_patch_with_a_passing_test_applies(http: httpx.Client) -> None:
    name = unique()
    created = create(http, service(name))
    rv = created["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/x"]},
    ]
    resp = http.patch(
        f"{SERVICES}/{name}", json=ops, headers={"Content-Type": "application/json-patch+json"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["metadata"]["finalizers"] == ["example.com/x"]


def test_merge_patch_null_removes_a_key(http: httpx.Client) -> None:
    name = unique()
    body = service(name)
    body["metadata"]["annotations"] = {"keep": "1", "drop": "2"}
    create(http, body)
    resp = http.patch(
        f"{SERVICES}/{name}",
        json={"metadata": {"annotations": {"drop": None}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert resp.status_code == 200
    assert resp.json()["metadata"]["annotations"] == {"keep": "1"}


def test_strategic_merge_patch_merges_ports_by_port(http: httpx.Client) -> None:
    name = unique()
    create(http, service(name))
    patch = {
        "spec": {
            "$setElementOrder/ports": [{"port": 80}, {"port": 9100}],
            "ports": [{"port": 80, "targetPort": 9090}, {"name": "metrics", "port": 9100}],
        }
    }
    resp = http.patch(
        f"{SERVICES}/{name}",
        json=patch,
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert resp.status_code == 200, resp.text
    ports = resp.json()["spec"]["ports"]
    assert [(p["port"], p.get("name"), p["targetPort"]) for p in ports] == [
        (80, "http", 9090),
        (9100, "metrics", 9100),
    ]
    back = {"spec": {"ports": [{"$patch": "delete", "port": 9100}]}}
    resp = http.patch(
        f"{SERVICES}/{name}",
        json=back,
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert [p["port"] for p in resp.json()["spec"]["ports"]] == [80]


def test_cluster_ip_is_immutable_once_set(http: httpx.Client) -> None:
    name = unique()
    body = service(name)
    body["spec"]["clusterIP"] = "10.96.7.7"
    create(http, body)
    resp = http.patch(
        f"{SERVICES}/{name}",
        json={"spec": {"clusterIP": "10.96.7.8"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert resp.status_code == 422
    assert resp.json()["details"]["causes"][0]["field"].startswith("spec.clusterIP")


def test_delete_without_finalizers_removes_at_once(http: httpx.Client) -> None:
    name = unique()
    create(http, service(name))
    resp = http.request("DELETE", f"{SERVICES}/{name}", json={"propagationPolicy": "Background"})
    assert resp.status_code == 200
    assert resp.json()["metadata"]["name"] == name
    assert http.get(f"{SERVICES}/{name}").status_code == 404


def test_delete_with_finalizers_waits_for_the_last_one(http: httpx.Client) -> None:
    name = unique()
    body = service(name)
    body["metadata"]["finalizers"] = ["example.com/a", "example.com/b"]
    create(http, body)
    resp = http.delete(f"{SERVICES}/{name}")
    assert resp.status_code == 202
    marked = http.get(f"{SERVICES}/{name}").json()
    assert marked["metadata"]["deletionTimestamp"]
    merge = {"Content-Type": "application/merge-patch+json"}
    one_left = http.patch(
        f"{SERVICES}/{name}", json={"metadata": {"finalizers": ["example.com/b"]}}, headers=merge
    )
    assert one_left.status_code == 200
    assert http.get(f"{SERVICES}/{name}").status_code == 200
    last = http.patch(f"{SERVICES}/{name}", json={"metadata": {"finalizers": None}}, headers=merge)
    assert last.status_code == 200
    assert http.get(f"{SERVICES}/{name}").status_code == 404


def test_delete_precondition_on_uid_is_a_conflict(http: httpx.Client) -> None:
    name = unique()
    create(http, service(name))
    resp = http.request(
        "DELETE", f"{SERVICES}/{name}", json={"preconditions": {"uid": "not-the-uid"}}
    )
    assert resp.status_code == 409
    assert http.get(f"{SERVICES}/{name}").status_code == 200


def test_deletecollection_deletes_what_the_selector_picks(http: httpx.Client) -> None:
    group = unique("grp")
    keep = unique()
    for name in (unique(), unique()):
        create(http, service(name, team=group))
    create(http, service(keep, team="other"))
    resp = http.delete(SERVICES, params={"labelSelector": f"team={group}"})
    assert resp.status_code == 200, resp.text
    left = http.get(SERVICES, params={"labelSelector": f"team={group}"}).json()["items"]
    assert left == []
    assert http.get(f"{SERVICES}/{keep}").status_code == 200


def test_dry_run_stores_nothing(http: httpx.Client) -> None:
    name = unique()
    resp = http.post(SERVICES, json=service(name), params={"dryRun": "All"})
    assert resp.status_code == 201
    assert http.get(f"{SERVICES}/{name}").status_code == 404


def test_list_label_selectors(http: httpx.Client) -> None:
    tier = unique("tier")
    web, db, cache = unique(), unique(), unique()
    create(http, service(web, tier=tier, role="web"))
    create(http, service(db, tier=tier, role="db"))
    create(http, service(cache, tier=tier))

    def names(selector: str) -> set[str]:
        resp = http.get(SERVICES, params={"labelSelector": selector})
        assert resp.status_code == 200, resp.text
        return {o["metadata"]["name"] for o in resp.json()["items"]}

    assert names(f"tier={tier},role=web") == {web}
    assert names(f"tier=={tier},role!=web") == {db, cache}
    assert names(f"tier={tier},role in (web,db)") == {web, db}
    assert names(f"tier={tier},role notin (web)") == {db, cache}
    assert names(f"tier={tier},role") == {web, db}
    assert names(f"tier={tier},!role") == {cache}


def test_list_field_selectors(http: httpx.Client) -> None:
    name = unique()
    create(http, service(name))
    resp = http.get("/api/v1/services", params={"fieldSelector": f"metadata.name={name}"})
    assert [o["metadata"]["name"] for o in resp.json()["items"]] == [name]
    other = http.get(SERVICES, params={"fieldSelector": "metadata.namespace!=default"})
    assert other.json()["items"] == []
    bad = http.get(SERVICES, params={"fieldSelector": "spec.foo=bar"})
    assert bad.status_code == 400
    assert bad.json()["message"] == "field label not supported: spec.foo"


def test_bad_label_selector_is_400(http: httpx.Client) -> None:
    resp = http.get(SERVICES, params={"labelSelector": "a in (b"})
    assert resp.status_code == 400
    assert resp.json()["reason"] == "BadRequest"


def test_limit_and_continue_page_through_every_item_once(http: httpx.Client) -> None:
    path = "/api/v1/namespaces/default/configmaps"
    group = unique("page")
    made = set()
    for i in range(7):
        name = f"{group}-{i}"
        made.add(name)
        create(
            http,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "labels": {"g": group}},
            },
            path,
        )
    for selector in ("", f"g={group}"):
        seen: list[str] = []
        cont = ""
        revisions = set()
        while True:
            params = {"limit": "3", "labelSelector": selector}
            if cont:
                params["continue"] = cont
            page = http.get(path, params=params).json()
            assert len(page["items"]) <= 3
            seen += [o["metadata"]["name"] for o in page["items"]]
            revisions.add(page["metadata"]["resourceVersion"])
            cont = page["metadata"].get("continue", "")
            if not cont:
                break
        mine = [n for n in seen if n.startswith(group)]
        assert sorted(mine) == sorted(made)
        assert len(seen) == len(set(seen))
        assert len(revisions) == 1


def test_list_at_an_exact_resource_version_reads_the_past(http: httpx.Client) -> None:
    name = unique()
    created = create(http, service(name))
    rv = created["metadata"]["resourceVersion"]
    http.delete(f"{SERVICES}/{name}")
    past = http.get(
        SERVICES, params={"resourceVersion": rv, "resourceVersionMatch": "Exact"}
    ).json()
    assert name in {o["metadata"]["name"] for o in past["items"]}
    assert past["metadata"]["resourceVersion"] == rv
    now = http.get(SERVICES, params={"resourceVersion": "0"}).json()
    assert name not in {o["metadata"]["name"] for o in now["items"]}


def test_list_carries_kind_api_version_and_resource_version(http: httpx.Client) -> None:
    create(http, service(unique()))
    body = http.get(SERVICES).json()
    assert body["kind"] == "ServiceList" and body["apiVersion"] == "v1"
    assert int(body["metadata"]["resourceVersion"]) > 0
    assert all(o["kind"] == "Service" and o["apiVersion"] == "v1" for o in body["items"])


def test_cluster_scoped_objects_have_no_namespace(http: httpx.Client) -> None:
    name = unique("ns")
    created = create(
        http,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        "/api/v1/namespaces",
    )
    assert "namespace" not in created["metadata"]
    assert http.get(f"/api/v1/namespaces/{name}").status_code == 200


def test_deleting_a_namespace_deletes_its_objects(http: httpx.Client) -> None:
    ns = unique("ns")
    create(
        http,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        "/api/v1/namespaces",
    )
    create(http, service("inside"), f"/api/v1/namespaces/{ns}/services")
    assert http.delete(f"/api/v1/namespaces/{ns}").status_code == 200
    assert http.get(f"/api/v1/namespaces/{ns}/services/inside").status_code == 404
    assert http.get(f"/api/v1/namespaces/{ns}").status_code == 404


def test_a_namespace_with_finalized_objects_terminates_until_they_go(http: httpx.Client) -> None:
    ns = unique("ns")
    namespaces = "/api/v1/namespaces"
    create(http, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, namespaces)
    held = service("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    create(http, held, f"/api/v1/namespaces/{ns}/services")
    create(http, service("free"), f"/api/v1/namespaces/{ns}/services")
    resp = http.delete(f"{namespaces}/{ns}")
    assert resp.status_code == 202
    assert resp.json()["status"]["phase"] == "Terminating"
    assert http.get(f"/api/v1/namespaces/{ns}/services/free").status_code == 404
    assert http.get(f"/api/v1/namespaces/{ns}/services/held").json()["metadata"][
        "deletionTimestamp"
    ]
    refused = http.post(f"/api/v1/namespaces/{ns}/services", json=service("late"))
    assert refused.status_code == 403
    http.patch(
        f"/api/v1/namespaces/{ns}/services/held",
        json={"metadata": {"finalizers": None}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert http.get(f"/api/v1/namespaces/{ns}/services/held").status_code == 404
    assert http.get(f"{namespaces}/{ns}").status_code == 404


def test_default_namespace_cannot_be_deleted(http: httpx.Client) -> None:
    resp = http.delete("/api/v1/namespaces/default")
    assert resp.status_code == 403
    assert http.get("/api/v1/namespaces/default").status_code == 200


def test_event_without_kind_gets_one_and_a_generated_name(http: httpx.Client) -> None:
    body = {
        "metadata": {"generateName": "svc-", "namespace": "default"},
        "involvedObject": {"kind": "Service", "name": "x", "namespace": "default"},
        "reason": "Synced",
        "message": "ok",
        "type": "Normal",
    }
    created = create(http, body, "/api/v1/namespaces/default/events")
    assert created["kind"] == "Event" and created["apiVersion"] == "v1"
    assert created["metadata"]["name"].startswith("svc-")


def test_group_resources_are_served_under_apis(http: httpx.Client) -> None:
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": unique("lease")},
        "spec": {"holderIdentity": "me"},
    }
    path = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
    created = create(http, lease, path)
    got = http.get(f"{path}/{created['metadata']['name']}")
    assert got.status_code == 200
    assert got.json()["spec"]["holderIdentity"] == "me"


def test_version_health_and_metrics(http: httpx.Client) -> None:
    version = http.get("/version").json()
    assert (version["major"], version["minor"]) == ("1", "32")
    assert version["gitVersion"].startswith("v1.32.")
    for path in ("/healthz", "/livez", "/readyz"):
        assert http.get(path).text == "ok"
    http.get(SERVICES)
    metrics = http.get("/metrics").text
    assert "apiserver_request_total{" in metrics
    assert "apiserver_request_duration_seconds_bucket{" in metrics
