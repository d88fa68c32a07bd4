"""The real kubectl (v1.32, as found on PATH) against a real apiserver.

Every command runs with its own kubeconfig and its own cache dir (kubectl caches
discovery and OpenAPI per server address; a fresh server reuses no stale cache).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.kubectl import KUBECTL, Kubectl, write
from tests.support.server import RunningApiserver, shared_apiserver

__all__ = ["shared_apiserver"]

pytestmark = [
    pytest.mark.kubectl,
    pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH: install kubectl v1.32"),
]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SERVICES = "/api/v1/namespaces/default/services"


@pytest.fixture(scope="module")
def kubectl(shared_apiserver: RunningApiserver) -> Kubectl:
    return Kubectl(shared_apiserver)


@pytest.fixture
def http(shared_apiserver: RunningApiserver) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_apiserver.url, timeout=10) as client:
        yield client


def service_yaml(name: str, port: int = 80, app: str = "web") -> str:
    return f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
  labels:
    app: {app}
spec:
  selector:
    app: {app}
  ports:
    - name: http
      port: {port}
      targetPort: 8080
"""


def test_apply_the_seed_manifests(kubectl: Kubectl, http: httpx.Client) -> None:
    pod = kubectl.run("apply", "-f", str(EXAMPLES / "pod-example.yaml"))
    assert pod.stdout.strip() == "pod/pod created"
    svc = kubectl.run("apply", "-f", str(EXAMPLES / "service.yaml"))
    assert svc.stdout.strip() == "service/my-service created"
    stored = http.get(f"{SERVICES}/my-service").json()
    assert stored["spec"]["ports"][0]["targetPort"] == "nginx"
    assert "kubectl.kubernetes.io/last-applied-configuration" in stored["metadata"]["annotations"]
    again = kubectl.run("apply", "-f", str(EXAMPLES / "service.yaml"))
    assert again.stdout.strip() == "service/my-service unchanged"


def test_the_seed_service_name_is_a_clear_422(kubectl: Kubectl, http: httpx.Client) -> None:
    done = kubectl.run(
        "apply", "-f", str(EXAMPLES / "invalid" / "service-myService.yaml"), check=False
    )
    assert done.returncode == 1
    assert 'The Service "myService" is invalid' in done.stderr
    assert 'metadata.name: Invalid value: "myService"' in done.stderr
    assert http.get(f"{SERVICES}/myService").status_code == 404


def test_reapply_with_a_changed_port_is_a_strategic_merge(
    kubectl: Kubectl, http: httpx.Client, tmp_path: Path
) -> None:
    first = write(tmp_path, "v1.yaml", service_yaml("reapplied", 80))
    kubectl.run("apply", "-f", str(first))
    second = write(tmp_path, "v2.yaml", service_yaml("reapplied", 8081))
    done = kubectl.run("apply", "-f", str(second))
    assert done.stdout.strip() == "service/reapplied configured"
    ports = http.get(f"{SERVICES}/reapplied").json()["spec"]["ports"]
    assert [(p["port"], p["targetPort"], p["protocol"]) for p in ports] == [(8081, 8080, "TCP")]


def test_unknown_field_is_rejected_by_strict_validation(kubectl: Kubectl, tmp_path: Path) -> None:
    typo = write(tmp_path, "typo.yaml", service_yaml("typo").replace("  selector:", "  selectr:"))
    done = kubectl.run("apply", "-f", str(typo), check=False)
    assert done.returncode == 1
    assert 'unknown field "spec.selectr"' in done.stderr


def test_get_in_every_output_format(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl.run("apply", "-f", str(write(tmp_path, "s.yaml", service_yaml("formats", app="fmt"))))
    table = kubectl.run("get", "services", "formats").stdout.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert table[1].split()[0:2] == ["formats", "ClusterIP"]
    assert "80/TCP" in table[1]
    wide = kubectl.run("get", "services", "formats", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-1] == "SELECTOR"
    assert wide[1].split()[-1] == "app=fmt"
    as_yaml = kubectl.run("get", "service", "formats", "-o", "yaml").stdout
    assert "name: formats" in as_yaml and "kind: Service" in as_yaml
    as_json = kubectl.run("get", "svc", "formats", "-o", "json").stdout
    assert '"name": "formats"' in as_json
    names = kubectl.run("get", "svc", "-o", "name").stdout.split()
    assert "service/formats" in names
    everywhere = kubectl.run("get", "svc", "-A", "--show-labels").stdout.splitlines()
    assert everywhere[0].split()[0] == "NAMESPACE"
    assert any(
        line.split()[:2] == ["default", "formats"] and "app=fmt" in line for line in everywhere
    )


def test_label_and_field_selectors(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl.run("apply", "-f", str(write(tmp_path, "a.yaml", service_yaml("sel-a", app="sel-a"))))
    kubectl.run("apply", "-f", str(write(tmp_path, "b.yaml", service_yaml("sel-b", app="sel-b"))))
    by_label = kubectl.run("get", "svc", "-l", "app in (sel-a)", "-o", "name").stdout.split()
    assert by_label == ["service/sel-a"]
    by_field = kubectl.run("get", "svc", "--field-selector", "metadata.name=sel-b", "-o", "name")
    assert by_field.stdout.split() == ["service/sel-b"]
    bad = kubectl.run("get", "svc", "--field-selector", "spec.foo=bar", check=False)
    assert bad.returncode == 1
    assert "field label not supported: spec.foo" in bad.stderr


def test_get_watch_sees_added_modified_deleted(kubectl: Kubectl, http: httpx.Client) -> None:
    watches = _watch_count(http)
    proc = kubectl.popen(
        "get", "services", "--watch-only", "--output-watch-events", "-l", "app=watched"
    )
    lines: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    try:
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "watched", "labels": {"app": "watched"}},
            "spec": {"selector": {"app": "watched"}, "ports": [{"port": 80}]},
        }
        # --watch-only prints only what follows kubectl's list: wait until it watches.
        _wait_for_watch(http, watches)
        assert http.post(SERVICES, json=body).status_code == 201
        merge = {"Content-Type": "application/merge-patch+json"}
        http.patch(f"{SERVICES}/watched", json={"spec": {"ports": [{"port": 81}]}}, headers=merge)
        http.delete(f"{SERVICES}/watched")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(x.startswith("DELETED") for x in lines):
            time.sleep(0.05)
        kinds = [line.split()[0] for line in lines if line.strip() and not line.startswith("EVENT")]
        assert kinds[:3] == ["ADDED", "MODIFIED", "DELETED"], lines
    finally:
        proc.terminate()
        proc.wait(10)


def _watch_count(http: httpx.Client) -> float:
    """How many watch requests the server has answered (from /metrics)."""
    total = 0.0
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("apiserver_request_total{") and 'verb="WATCH"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait_for_watch(http: httpx.Client, before: float) -> None:
    """Poll /metrics until one more watch request has reached the server."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _watch_count(http) > before:
            return
        time.sleep(0.05)
    raise AssertionError("kubectl never opened its watch")


def test_describe_service(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl.run(
        "apply", "-f", str(write(tmp_path, "d.yaml", service_yaml("described", app="desc")))
    )
    out = kubectl.run("describe", "service", "described").stdout
    fields = dict(
        (line.split(":", 1)[0].strip(), line.split(":", 1)[1].strip())
        for line in out.splitlines()
        if ":" in line and not line.startswith(" ")
    )
    assert fields["Name"] == "described"
    assert fields["Namespace"] == "default"
    assert fields["Selector"] == "app=desc"
    assert fields["Type"] == "ClusterIP"
    assert fields["TargetPort"] == "8080/TCP"


def test_delete_by_file(kubectl: Kubectl, http: httpx.Client, tmp_path: Path) -> None:
    manifest = write(tmp_path, "gone.yaml", service_yaml("to-delete"))
    kubectl.run("apply", "-f", str(manifest))
    done = kubectl.run("delete", "-f", str(manifest))
    assert done.stdout.strip() == 'service "to-delete" deleted'
    assert http.get(f"{SERVICES}/to-delete").status_code == 404


def test_wait_for_jsonpath(kubectl: Kubectl, http: httpx.Client) -> None:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "waited"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    assert http.post("/api/v1/namespaces/default/pods", json=pod).status_code == 201
    proc = kubectl.popen(
        "wait", "--for=jsonpath={.status.phase}=Running", "pod/waited", "--timeout=30s"
    )
    try:
        resp = http.patch(
            "/api/v1/namespaces/default/pods/waited/status",
            json={"status": {"phase": "Running"}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert resp.status_code == 200, resp.text
        out, err = proc.communicate(timeout=40)
        assert proc.returncode == 0, err
        assert out.strip() == "pod/waited condition met"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_api_resources(kubectl: Kubectl) -> None:
    out = kubectl.run("api-resources").stdout.splitlines()
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert rows["services"][1:] == ["svc", "v1", "true", "Service"]
    assert rows["pods"][1:] == ["po", "v1", "true", "Pod"]
    assert rows["namespaces"][1:] == ["ns", "v1", "false", "Namespace"]
    assert rows["endpointslices"][1:] == ["discovery.k8s.io/v1", "true", "EndpointSlice"]
    assert rows["leases"][1:] == ["coordination.k8s.io/v1", "true", "Lease"]
