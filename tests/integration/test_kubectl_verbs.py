"""More of kubectl's everyday verbs against a real apiserver: create, label, annotate,
patch (every type), replace, scale of selectors, get all/wide columns, server-side apply's
clean refusal, finalizer-held deletes that kubectl waits out."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.kubectl import Kubectl, write
from tests.support.server import RunningApiserver, shared_apiserver

__all__ = ["shared_apiserver"]

pytestmark = [
    pytest.mark.kubectl,
    pytest.mark.skipif(
        shutil.which("kubectl") is None, reason="kubectl is not on PATH: install kubectl v1.32"
    ),
]

PODS = "/api/v1/namespaces/default/pods"
SERVICES = "/api/v1/namespaces/default/services"


def table_row(header: str, line: str) -> dict[str, str]:
    """A row of kubectl's table by its header's column starts (headers may hold spaces)."""
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return dict(zip(names, cells, strict=True))


@pytest.fixture(scope="module")
def kubectl(shared_apiserver: RunningApiserver) -> Kubectl:
    return Kubectl(shared_apiserver)


@pytest.fixture
def http(shared_apiserver: RunningApiserver) -> httpx.Client:
    return httpx.Client(base_url=shared_apiserver.url, timeout=10)


def test_create_configmap_and_get_it_back(kubectl: Kubectl) -> None:
    done = kubectl.run("create", "configmap", "settings", "--from-literal=mode=fast")
    assert done.stdout.strip() == "configmap/settings created"
    data = json.loads(kubectl.run("get", "cm", "settings", "-o", "json").stdout)["data"]
    assert data == {"mode": "fast"}
    again = kubectl.run("create", "configmap", "settings", "--from-literal=a=b", check=False)
    assert again.returncode == 1
    assert 'configmaps "settings" already exists' in again.stderr


def test_label_annotate_and_select(kubectl: Kubectl, http: httpx.Client) -> None:
    kubectl.run("create", "configmap", "labelled")
    assert kubectl.run("label", "cm", "labelled", "tier=gold").stdout.strip() == (
        "configmap/labelled labeled"
    )
    kubectl.run("annotate", "cm", "labelled", "note=hello world")
    got = http.get("/api/v1/namespaces/default/configmaps/labelled").json()["metadata"]
    assert got["labels"] == {"tier": "gold"}
    assert got["annotations"]["note"] == "hello world"
    names = kubectl.run("get", "cm", "-l", "tier=gold", "-o", "name").stdout.split()
    assert names == ["configmap/labelled"]
    kubectl.run("label", "cm", "labelled", "tier-")
    after = http.get("/api/v1/namespaces/default/configmaps/labelled").json()["metadata"]
    assert not after.get("labels")


def test_patch_of_every_type(kubectl: Kubectl, http: httpx.Client) -> None:
    kubectl.run("create", "configmap", "patched", "--from-literal=a=1")
    kubectl.run("patch", "cm", "patched", "--type=merge", "-p", '{"data":{"b":"2"}}')
    kubectl.run("patch", "cm", "patched", "--type=json", "-p", '[{"op":"remove","path":"/data/a"}]')
    kubectl.run("patch", "cm", "patched", "-p", '{"data":{"c":"3"}}')  # strategic
    assert http.get("/api/v1/namespaces/default/configmaps/patched").json()["data"] == {
        "b": "2",
        "c": "3",
    }
    failed = kubectl.run(
        "patch",
        "cm",
        "patched",
        "--type=json",
        "-p",
        '[{"op":"test","path":"/data/b","value":"nope"}]',
        check=False,
    )
    assert failed.returncode == 1
    assert "The request is invalid" in failed.stderr and "test failed" in failed.stderr


def test_replace_with_a_stale_version_is_a_conflict(
    kubectl: Kubectl, http: httpx.Client, tmp_path: Path
) -> None:
    kubectl.run("create", "configmap", "replaced", "--from-literal=v=1")
    current = json.loads(kubectl.run("get", "cm", "replaced", "-o", "json").stdout)
    current["data"] = {"v": "2"}
    first = write(tmp_path, "first.json", json.dumps(current))
    assert kubectl.run("replace", "-f", str(first)).stdout.strip() == "configmap/replaced replaced"
    current["data"] = {"v": "3"}  # still carries the old resourceVersion
    stale = write(tmp_path, "stale.json", json.dumps(current))
    done = kubectl.run("replace", "-f", str(stale), check=False)
    assert done.returncode == 1
    assert "the object has been modified" in done.stderr
    assert http.get("/api/v1/namespaces/default/configmaps/replaced").json()["data"] == {"v": "2"}


def test_pods_wide_shows_ip_and_node(kubectl: Kubectl, http: httpx.Client) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "placed", "labels": {"app": "placed"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox"}]},
    }
    assert http.post(PODS, json=pod).status_code == 201
    status = {
        "status": {"phase": "Running", "podIP": "10.244.0.7", "podIPs": [{"ip": "10.244.0.7"}]}
    }
    merge = {"Content-Type": "application/merge-patch+json"}
    assert http.patch(f"{PODS}/placed/status", json=status, headers=merge).status_code == 200
    lines = kubectl.run("get", "pods", "placed", "-o", "wide").stdout.splitlines()
    row = table_row(lines[0], lines[1])
    assert list(row)[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert row["STATUS"] == "Running"
    assert row["IP"] == "10.244.0.7"
    assert row["NODE"] == "node-1"
    by_field = kubectl.run("get", "pods", "--field-selector", "spec.nodeName=node-1", "-o", "name")
    assert by_field.stdout.split() == ["pod/placed"]


def test_get_all_lists_pods_and_services(kubectl: Kubectl, tmp_path: Path) -> None:
    svc = write(
        tmp_path,
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: listed\nspec:\n  ports:\n  - port: 80\n",
    )
    kubectl.run("apply", "-f", str(svc))
    out = kubectl.run("get", "all").stdout
    assert "service/listed" in out


def test_server_side_apply_is_refused_cleanly(kubectl: Kubectl, tmp_path: Path) -> None:
    cm = write(
        tmp_path,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: b\n",
    )
    done = kubectl.run("apply", "--server-side", "-f", str(cm), check=False)
    assert done.returncode == 1
    assert "UnsupportedMediaType" in done.stderr or "not available" in done.stderr


def test_delete_waits_for_finalizers_to_clear(kubectl: Kubectl, http: httpx.Client) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "held", "finalizers": ["example.com/hold"]},
    }
    assert http.post("/api/v1/namespaces/default/configmaps", json=body).status_code == 201
    proc = kubectl.popen("delete", "configmap", "held", "--timeout=30s")
    released = threading.Event()

    def release() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got = http.get("/api/v1/namespaces/default/configmaps/held").json()
            if got.get("metadata", {}).get("deletionTimestamp"):
                http.patch(
                    "/api/v1/namespaces/default/configmaps/held",
                    json={"metadata": {"finalizers": None}},
                    headers={"Content-Type": "application/merge-patch+json"},
                )
                released.set()
                return
            time.sleep(0.05)

    releaser = threading.Thread(target=release, daemon=True)
    releaser.start()
    try:
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert released.is_set()
    assert proc.returncode == 0, err
    assert out.strip() == 'configmap "held" deleted'
    assert http.get("/api/v1/namespaces/default/configmaps/held").status_code == 404


def test_watch_events_reach_kubectl_get_watch_for_pods(
    kubectl: Kubectl, http: httpx.Client
) -> None:
    proc = kubectl.popen("get", "pods", "-l", "app=watched-pod", "--watch", "-o", "name")
    lines: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    try:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "watched-pod", "labels": {"app": "watched-pod"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }
        assert http.post(PODS, json=pod).status_code == 201
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("pod/watched-pod" in line for line in lines):
            time.sleep(0.05)
        assert any("pod/watched-pod" in line for line in lines), lines
    finally:
        proc.terminate()
        proc.wait(10)


def test_generators_post_protobuf_and_it_is_read(kubectl: Kubectl, http: httpx.Client) -> None:
    assert kubectl.run("create", "namespace", "made-by-kubectl").stdout.strip() == (
        "namespace/made-by-kubectl created"
    )
    done = kubectl.run("create", "service", "clusterip", "generated", "--tcp=80:8080")
    assert done.stdout.strip() == "service/generated created"
    svc = http.get(f"{SERVICES}/generated").json()
    assert svc["spec"]["selector"] == {"app": "generated"}
    assert [
        (p["name"], p["port"], p["targetPort"], p["protocol"]) for p in svc["spec"]["ports"]
    ] == [("80-8080", 80, 8080, "TCP")]
    assert http.get("/api/v1/namespaces/made-by-kubectl").status_code == 200
