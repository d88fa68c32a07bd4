"""CustomResourceDefinitions on a real apiserver: served at once, validated, cleaned up."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.poll import wait_for
from tests.support.server import RunningApiserver, running_apiserver, shared_apiserver

__all__ = ["shared_apiserver"]

ROOT = Path(__file__).resolve().parents[2]
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
_groups = itertools.count()


def widget_crd(group: str, *, scope: str = "Namespaced", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {
                "kind": "Widget",
                "plural": "widgets",
                "shortNames": ["wdg"],
                "categories": ["all"],
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {
                                        "size": {"type": "integer", "minimum": 1},
                                        "color": {"type": "string", "default": "blue"},
                                    },
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"phase": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    body["spec"].update(spec)
    return body


@pytest.fixture
def http(shared_apiserver: RunningApiserver) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_apiserver.url, timeout=10) as client:
        yield client


@pytest.fixture
def group(http: httpx.Client) -> str:
    """A fresh API group with the Widget CRD installed and established."""
    name = f"g{next(_groups)}.example.com"
    resp = http.post(CRDS, json=widget_crd(name))
    assert resp.status_code == 201, resp.text
    return name


def widgets(group: str, namespace: str | None = "default") -> str:
    if namespace is None:
        return f"/apis/{group}/v1/widgets"
    return f"/apis/{group}/v1/namespaces/{namespace}/widgets"


def widget(name: str, group: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": spec or {"size": 3},
    }


def kubectl(api: RunningApiserver, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(api.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- the CRD itself --------------------------------------------------------------------


def test_created_crd_reports_names_accepted_and_established(http: httpx.Client) -> None:
    resp = http.post(CRDS, json=widget_crd("status.example.com"))
    assert resp.status_code == 201, resp.text
    conditions = {c["type"]: c["status"] for c in resp.json()["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert resp.json()["status"]["acceptedNames"]["kind"] == "Widget"
    assert resp.json()["status"]["storedVersions"] == ["v1"]


def test_invalid_crd_is_refused_with_field_paths(http: httpx.Client) -> None:
    bad = widget_crd("bad.example.com", scope="Everywhere")
    bad["metadata"]["name"] = "wrong.example.com"
    resp = http.post(CRDS, json=bad)
    assert resp.status_code == 422, resp.text
    fields = {c["field"] for c in resp.json()["details"]["causes"]}
    assert {"metadata.name", "spec.scope"} <= fields


def test_a_kind_taken_in_the_group_is_not_established(http: httpx.Client, group: str) -> None:
    clash = widget_crd(group)
    clash["metadata"]["name"] = f"gadgets.{group}"
    clash["spec"]["names"] = {"kind": "Widget", "plural": "gadgets"}
    resp = http.post(CRDS, json=clash)
    assert resp.status_code == 201, resp.text
    conditions = {c["type"]: c for c in resp.json()["status"]["conditions"]}
    assert conditions["NamesAccepted"]["status"] == "False"
    assert '"Widget" is already in use' in conditions["NamesAccepted"]["message"]
    assert conditions["Established"]["status"] == "False"
    assert http.get(f"/apis/{group}/v1/namespaces/default/gadgets").status_code == 404


# --- custom objects --------------------------------------------------------------------


def test_custom_objects_are_served_as_soon_as_the_crd_is_created(
    http: httpx.Client, group: str
) -> None:
    resp = http.post(widgets(group), json=widget("first", group))
    assert resp.status_code == 201, resp.text
    got = http.get(f"{widgets(group)}/first").json()
    assert got["metadata"]["uid"] == resp.json()["metadata"]["uid"]
    listed = http.get(widgets(group)).json()
    assert listed["kind"] == "WidgetList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["first"]
    assert http.get(widgets(group, None)).json()["items"][0]["metadata"]["namespace"] == "default"


def test_discovery_lists_the_custom_resource_and_its_status(http: httpx.Client, group: str) -> None:
    groups = http.get("/apis").json()["groups"]
    assert any(g["name"] == group for g in groups)
    resources = {r["name"]: r for r in http.get(f"/apis/{group}/v1").json()["resources"]}
    assert set(resources) == {"widgets", "widgets/status"}
    assert resources["widgets"]["kind"] == "Widget"
    assert resources["widgets"]["namespaced"] is True
    assert resources["widgets"]["shortNames"] == ["wdg"]
    assert {"list", "watch", "patch"} <= set(resources["widgets"]["verbs"])


def test_invalid_object_is_refused_with_its_field_path(http: httpx.Client, group: str) -> None:
    resp = http.post(widgets(group), json=widget("bad", group, size="big"))
    assert resp.status_code == 422, resp.text
    status = resp.json()
    assert status["reason"] == "Invalid"
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.size"]
    assert "Widget." + group + ' "bad" is invalid: spec.size' in status["message"]
    assert http.get(f"{widgets(group)}/bad").status_code == 404


def test_missing_required_field_is_refused(http: httpx.Client, group: str) -> None:
    resp = http.post(widgets(group), json=widget("empty", group, color="red"))
    assert resp.status_code == 422, resp.text
    assert resp.json()["details"]["causes"][0] == {
        "reason": "FieldValueRequired",
        "message": "Required value",
        "field": "spec.size",
    }


def test_defaults_are_applied_and_unknown_fields_pruned(http: httpx.Client, group: str) -> None:
    body = widget("pruned", group, size=2, bogus=True)
    body["extra"] = {"x": 1}
    created = http.post(widgets(group), json=body).json()
    assert created["spec"] == {"size": 2, "color": "blue"}
    assert "extra" not in created


def test_strict_field_validation_names_unknown_fields(http: httpx.Client, group: str) -> None:
    resp = http.post(
        widgets(group),
        params={"fieldValidation": "Strict"},
        json=widget("strict", group, size=2, bogus=True),
    )
    assert resp.status_code == 400, resp.text
    assert 'unknown field "spec.bogus"' in resp.json()["message"]


def test_status_subresource_is_separate_from_the_main_resource(
    http: httpx.Client, group: str
) -> None:
    created = http.post(widgets(group), json=widget("st", group)).json()
    with_status = copy.deepcopy(created)
    with_status["status"] = {"phase": "Ignored"}
    updated = http.put(f"{widgets(group)}/st", json=with_status).json()
    assert "status" not in updated
    with_status["metadata"]["resourceVersion"] = updated["metadata"]["resourceVersion"]
    with_status["status"] = {"phase": "Ready"}
    status_resp = http.put(f"{widgets(group)}/st/status", json=with_status)
    assert status_resp.status_code == 200, status_resp.text
    assert status_resp.json()["status"] == {"phase": "Ready"}
    assert status_resp.json()["metadata"]["generation"] == 1


def test_cluster_scoped_objects_have_no_namespace(http: httpx.Client) -> None:
    group = f"g{next(_groups)}.cluster.example.com"
    assert http.post(CRDS, json=widget_crd(group, scope="Cluster")).status_code == 201
    resp = http.post(widgets(group, None), json=widget("global", group))
    assert resp.status_code == 201, resp.text
    assert "namespace" not in resp.json()["metadata"]
    assert http.get(f"{widgets(group, None)}/global").status_code == 200


def test_every_served_version_is_reachable(http: httpx.Client) -> None:
    group = f"g{next(_groups)}.versions.example.com"
    crd = widget_crd(group)
    beta = copy.deepcopy(crd["spec"]["versions"][0])
    beta.update(name="v1beta1", storage=False)
    crd["spec"]["versions"].append(beta)
    assert http.post(CRDS, json=crd).status_code == 201
    versions = {
        v["version"]
        for g in http.get("/apis").json()["groups"]
        if g["name"] == group
        for v in g["versions"]
    }
    assert versions == {"v1", "v1beta1"}
    body = widget("beta", group)
    body["apiVersion"] = f"{group}/v1beta1"
    resp = http.post(f"/apis/{group}/v1beta1/namespaces/default/widgets", json=body)
    assert resp.status_code == 201, resp.text
    assert http.get(f"{widgets(group)}/beta").status_code == 200


def test_watch_on_a_custom_resource_sees_its_changes(http: httpx.Client, group: str) -> None:
    listed = http.get(widgets(group)).json()
    rv = listed["metadata"]["resourceVersion"]
    created = http.post(widgets(group), json=widget("watched", group)).json()
    with http.stream(
        "GET",
        widgets(group),
        params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "5"},
    ) as stream:
        first = json.loads(next(stream.iter_lines()))
    assert first["type"] == "ADDED"
    assert first["object"]["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert first["object"]["kind"] == "Widget"


def test_table_has_the_printer_columns(http: httpx.Client, group: str) -> None:
    http.post(widgets(group), json=widget("tabled", group, size=7))
    table = http.get(widgets(group), headers={"Accept": TABLE}).json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Size", "Phase"]
    assert table["rows"][0]["cells"] == ["tabled", 7, None]


def test_deleting_the_crd_deletes_its_objects(http: httpx.Client, group: str) -> None:
    for name in ("a", "b"):
        assert http.post(widgets(group), json=widget(name, group)).status_code == 201
    resp = http.delete(f"{CRDS}/widgets.{group}")
    assert resp.status_code in (200, 202), resp.text
    wait_for(lambda: http.get(f"{CRDS}/widgets.{group}").status_code == 404, what="CRD gone")
    assert http.get(widgets(group)).status_code == 404
    assert http.get(f"/apis/{group}/v1").status_code == 404
    # Re-creating the CRD does not bring the old objects back.
    assert http.post(CRDS, json=widget_crd(group)).status_code == 201
    assert http.get(widgets(group)).json()["items"] == []


def test_a_restarted_apiserver_serves_its_stored_crds(tmp_path: Path) -> None:
    group = "restart.example.com"
    with running_apiserver(data_dir=tmp_path) as api:
        with httpx.Client(base_url=api.url) as http:
            assert http.post(CRDS, json=widget_crd(group)).status_code == 201
            assert http.post(widgets(group), json=widget("kept", group)).status_code == 201
    with running_apiserver(data_dir=tmp_path) as api, httpx.Client(base_url=api.url) as http:
        assert http.get(f"{widgets(group)}/kept").status_code == 200


# --- kubectl ---------------------------------------------------------------------------


@pytest.mark.kubectl
def test_kubectl_get_shows_the_printer_columns(shared_apiserver: RunningApiserver) -> None:
    applied = kubectl(shared_apiserver, "apply", "-f", str(ROOT / "crds" / "greeting.yaml"))
    assert applied.returncode == 0, applied.stderr
    wait = kubectl(
        shared_apiserver,
        "wait",
        "--for=condition=established",
        "--timeout=10s",
        "crd/greetings.example.minik8s.dev",
    )
    assert wait.returncode == 0, wait.stderr
    created = kubectl(
        shared_apiserver, "apply", "-f", str(ROOT / "examples" / "greeting" / "hello.yaml")
    )
    assert created.returncode == 0, created.stderr
    got = kubectl(shared_apiserver, "get", "greetings")
    assert got.returncode == 0, got.stderr
    header, row = got.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "TO", "MESSAGE", "PHASE", "AGE"]
    assert row.split()[:2] == ["hello", "world"]
    short = kubectl(shared_apiserver, "get", "gr", "-o", "name")
    assert short.stdout.strip() == "greeting.example.minik8s.dev/hello"


@pytest.mark.kubectl
def test_kubectl_shows_the_field_path_of_an_invalid_object(
    shared_apiserver: RunningApiserver,
) -> None:
    kubectl(shared_apiserver, "apply", "-f", str(ROOT / "crds" / "greeting.yaml"))
    manifest = yaml.safe_dump(
        {
            "apiVersion": "example.minik8s.dev/v1",
            "kind": "Greeting",
            "metadata": {"name": "shouty"},
            "spec": {"to": "world", "punctuation": "!!!"},
        }
    )
    result = kubectl(shared_apiserver, "apply", "-f", "-", stdin=manifest)
    assert result.returncode != 0
    assert 'The Greeting "shouty" is invalid: spec.punctuation: Unsupported value: "!!!"' in (
        result.stderr
    )


def test_openapi_v3_serves_the_crd_schema_at_once(http: httpx.Client, group: str) -> None:
    root = http.get("/openapi/v3").json()["paths"]
    assert f"apis/{group}/v1" in root
    document = http.get(f"/openapi/v3/apis/{group}/v1").json()
    schemas = document["components"]["schemas"]
    (widget_schema,) = [s for s in schemas.values() if "x-kubernetes-group-version-kind" in s]
    assert widget_schema["x-kubernetes-group-version-kind"] == [
        {"group": group, "kind": "Widget", "version": "v1"}
    ]
    assert widget_schema["properties"]["spec"]["properties"]["size"]["type"] == "integer"
    assert any(path.endswith("/widgets/{name}") for path in document["paths"])


def test_an_updated_crd_schema_applies_to_the_next_write(http: httpx.Client, group: str) -> None:
    crd = http.get(f"{CRDS}/widgets.{group}").json()
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["properties"]["shape"] = {"type": "string", "default": "round"}
    spec_schema["properties"]["size"]["maximum"] = 5
    resp = http.put(f"{CRDS}/widgets.{group}", json=crd)
    assert resp.status_code == 200, resp.text
    assert resp.json()["metadata"]["generation"] == 2
    created = http.post(widgets(group), json=widget("shaped", group, size=2))
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["shape"] == "round"
    too_big = http.post(widgets(group), json=widget("big", group, size=6))
    assert too_big.status_code == 422, too_big.text
    assert "should be less than or equal to 5" in too_big.json()["message"]


def test_a_crd_refused_for_a_name_clash_is_accepted_once_the_other_goes(
    http: httpx.Client, group: str
) -> None:
    clash = widget_crd(group)
    clash["metadata"]["name"] = f"gizmos.{group}"
    clash["spec"]["names"] = {"kind": "Widget", "plural": "gizmos"}
    assert http.post(CRDS, json=clash).status_code == 201
    assert http.get(f"/apis/{group}/v1/namespaces/default/gizmos").status_code == 404
    assert http.delete(f"{CRDS}/widgets.{group}").status_code in (200, 202)

    def established() -> bool:
        crd = http.get(f"{CRDS}/gizmos.{group}").json()
        return any(
            c["type"] == "Established" and c["status"] == "True"
            for c in crd["status"]["conditions"]
        )

    wait_for(established, what="the other CRD to be established")
    wait_for(
        lambda: http.get(f"/apis/{group}/v1/namespaces/default/gizmos").status_code == 200,
        what="the kind to be served",
    )
