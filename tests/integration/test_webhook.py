"""Admission webhooks against a real apiserver, with a small recording webhook server.

The webhook server is the standard library's (a thread on 127.0.0.1:0): plain HTTP, or
HTTPS with a self-signed certificate whose PEM is the configuration's ``caBundle``.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.poll import wait_for
from tests.support.server import RunningApiserver, shared_apiserver

__all__ = ["shared_apiserver"]

CONFIGS = "/apis/admissionregistration.k8s.io/v1"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
_names = itertools.count()
HOLD_LIMIT_S = 60.0  # a held request is answered after this at the latest

Answer = Callable[[dict[str, Any]], dict[str, Any]]


class WebhookServer:
    """Answers AdmissionReviews with ``answer(request)`` and records every request."""

    def __init__(self, answer: Answer, context: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        # cleared by a test: the webhook holds each request until it is set again
        self.answering = threading.Event()
        self.answering.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = body["request"]
                outer.requests.append({"path": self.path, **request})
                outer.answering.wait(HOLD_LIMIT_S)
                response = {"uid": request["uid"], **outer.answer(request)}
                data = json.dumps(
                    {"apiVersion": body["apiVersion"], "kind": body["kind"], "response": response}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        scheme = "http"
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def calls(self, name: str) -> list[dict[str, Any]]:
        return [r for r in list(self.requests) if r.get("name") == name]


def allow(_request: dict[str, Any]) -> dict[str, Any]:
    return {"allowed": True}


def label_patch(request: dict[str, Any]) -> dict[str, Any]:
    patch = [{"op": "add", "path": "/data/mutated", "value": request["operation"]}]
    encoded = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"allowed": True, "patch": encoded, "patchType": "JSONPatch"}


@pytest.fixture
def http(shared_apiserver: RunningApiserver) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_apiserver.url, timeout=30) as client:
        yield client


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    server = WebhookServer(allow)
    yield server
    server.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def configure(
    http: httpx.Client,
    kind: str,
    url: str,
    *,
    resources: list[str],
    operations: list[str],
    marker: str,
    **extra: Any,
) -> str:
    """A webhook configuration for ConfigMaps labelled ``hook=<marker>``; its name."""
    name = unique(kind.lower())
    hook = {
        "name": f"{marker}.hooks.minik8s.test",
        "clientConfig": {"url": url},
        "rules": [
            {
                "operations": operations,
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": resources,
            }
        ],
        "objectSelector": {"matchLabels": {"hook": marker}},
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        **extra,
    }
    body = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": [hook],
    }
    plural = kind.lower() + "s"
    resp = http.post(f"{CONFIGS}/{plural}", json=body)
    assert resp.status_code == 201, resp.text
    return f"{CONFIGS}/{plural}/{name}"


def configmap(name: str, marker: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"hook": marker}},
        "data": data or {"a": "b"},
    }


def test_a_mutating_webhook_patch_is_stored_and_returned(
    http: httpx.Client, webhook: WebhookServer
) -> None:
    webhook.answer = label_patch
    marker = unique("mutate")
    config = configure(
        http,
        "MutatingWebhookConfiguration",
        webhook.url + "/mutate",
        resources=["configmaps"],
        operations=["CREATE", "UPDATE"],
        marker=marker,
    )
    name = unique("cm")
    created = http.post(CONFIGMAPS, json=configmap(name, marker))
    assert created.status_code == 201, created.text
    assert created.json()["data"]["mutated"] == "CREATE"
    assert http.get(f"{CONFIGMAPS}/{name}").json()["data"]["mutated"] == "CREATE"
    (call,) = webhook.calls(name)
    assert call["path"] == "/mutate"
    assert call["operation"] == "CREATE"
    assert call["namespace"] == "default"
    assert call["object"]["data"] == {"a": "b"}
    http.delete(config)


def test_delete_sends_the_old_object(http: httpx.Client, webhook: WebhookServer) -> None:
    marker = unique("delete")
    config = configure(
        http,
        "ValidatingWebhookConfiguration",
        webhook.url,
        resources=["configmaps"],
        operations=["DELETE"],
        marker=marker,
    )
    name = unique("cm")
    assert http.post(CONFIGMAPS, json=configmap(name, marker)).status_code == 201
    assert webhook.calls(name) == []
    assert http.delete(f"{CONFIGMAPS}/{name}").status_code == 200
    (call,) = webhook.calls(name)
    assert call["operation"] == "DELETE"
    assert call["object"] is None
    assert call["oldObject"]["metadata"]["name"] == name
    http.delete(config)


def test_status_writes_reach_only_rules_that_name_the_subresource(
    http: httpx.Client, webhook: WebhookServer
) -> None:
    marker = unique("status")
    main = configure(
        http,
        "ValidatingWebhookConfiguration",
        webhook.url + "/main",
        resources=["services"],
        operations=["UPDATE"],
        marker=marker,
    )
    status = configure(
        http,
        "ValidatingWebhookConfiguration",
        webhook.url + "/status",
        resources=["services/status"],
        operations=["UPDATE"],
        marker=marker,
    )
    name = unique("svc")
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"hook": marker}},
        "spec": {"ports": [{"port": 80}]},
    }
    assert http.post("/api/v1/namespaces/default/services", json=svc).status_code == 201
    resp = http.patch(
        f"/api/v1/namespaces/default/services/{name}/status",
        json={"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert resp.status_code == 200, resp.text
    calls = webhook.calls(name)
    assert [(c["path"], c.get("subResource")) for c in calls] == [("/status", "status")]
    http.delete(main)
    http.delete(status)


def test_a_slow_webhook_times_out_without_blocking_the_server(
    http: httpx.Client, webhook: WebhookServer, shared_apiserver: RunningApiserver
) -> None:
    """No clock is read: the webhook holds its requests until the test lets it answer, so
    "answered meanwhile" and "timed out" are states seen while the call is still held."""
    patient, impatient = unique("slow"), unique("slow")
    configs = [
        configure(
            http,
            "ValidatingWebhookConfiguration",
            webhook.url,
            resources=["configmaps"],
            operations=["CREATE"],
            marker=marker,
            timeoutSeconds=timeout,
        )
        for marker, timeout in ((patient, 30), (impatient, 1))
    ]

    def create_in_background(marker: str) -> tuple[threading.Thread, dict[str, httpx.Response]]:
        outcome: dict[str, httpx.Response] = {}

        def create() -> None:
            with httpx.Client(base_url=shared_apiserver.url, timeout=HOLD_LIMIT_S * 2) as other:
                outcome["resp"] = other.post(CONFIGMAPS, json=configmap(unique("cm"), marker))

        writer = threading.Thread(target=create)
        writer.start()
        return writer, outcome

    webhook.answering.clear()
    try:
        # While the webhook holds a create (for up to 30 s), the apiserver answers everyone
        # else: the list comes back with that create still waiting for its webhook.
        writer, outcome = create_in_background(patient)
        wait_for(lambda: webhook.requests, what="the webhook to receive the create")
        assert http.get(CONFIGMAPS).status_code == 200
        assert "resp" not in outcome and writer.is_alive()
        webhook.answering.set()
        writer.join(HOLD_LIMIT_S)
        assert outcome["resp"].status_code == 201, outcome["resp"].text

        # With timeoutSeconds 1, a create whose webhook holds it fails with the deadline,
        # while the webhook still holds it: the timeout, not the answer, ended the call.
        webhook.answering.clear()
        writer, outcome = create_in_background(impatient)
        writer.join(HOLD_LIMIT_S / 2)
        assert not writer.is_alive(), "the create outlived its webhook's 1 s timeout"
        resp = outcome["resp"]
        assert resp.status_code == 500, resp.text
        assert "context deadline exceeded" in resp.json()["message"]
    finally:
        webhook.answering.set()
    for config in configs:
        http.delete(config)


def test_namespace_selector_matches_the_namespace_labels(
    http: httpx.Client, webhook: WebhookServer
) -> None:
    marker = unique("ns")
    watched, other = unique("watched"), unique("other")
    for ns, labels in ((watched, {"hooks": marker}), (other, {})):
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}
        assert http.post("/api/v1/namespaces", json=body).status_code == 201
    config = configure(
        http,
        "ValidatingWebhookConfiguration",
        webhook.url,
        resources=["configmaps"],
        operations=["CREATE"],
        marker=marker,
        namespaceSelector={"matchLabels": {"hooks": marker}},
    )
    for ns in (watched, other):
        resp = http.post(f"/api/v1/namespaces/{ns}/configmaps", json=configmap("cm", marker))
        assert resp.status_code == 201, resp.text
    assert [c["namespace"] for c in webhook.calls("cm")] == [watched]
    http.delete(config)


def self_signed(tmp: Path, san: str = "IP:127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for ``san``, made by the openssl command."""
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=webhook".split()
    command += ["-addext", f"subjectAltName={san}", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_webhook_is_verified_against_the_ca_bundle(
    http: httpx.Client, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = WebhookServer(
        lambda _r: {"allowed": False, "status": {"message": "refused over TLS", "code": 403}},
        context,
    )
    try:
        marker = unique("tls")
        config = configure(
            http,
            "ValidatingWebhookConfiguration",
            server.url,
            resources=["configmaps"],
            operations=["CREATE"],
            marker=marker,
        )
        # Without the CA bundle the certificate is not trusted: the call fails (Fail).
        untrusted = http.post(CONFIGMAPS, json=configmap(unique("cm"), marker))
        assert untrusted.status_code == 500, untrusted.text
        assert "failed calling webhook" in untrusted.json()["message"]
        current = http.get(config).json()
        current["webhooks"][0]["clientConfig"]["caBundle"] = base64.b64encode(
            cert.read_bytes()
        ).decode()
        assert http.put(config, json=current).status_code == 200
        refused = http.post(CONFIGMAPS, json=configmap(unique("cm"), marker))
        assert refused.status_code == 403, refused.text
        assert refused.json()["message"].endswith("denied the request: refused over TLS")
        http.delete(config)
    finally:
        server.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_a_service_webhook_is_reached_at_its_cluster_ip_and_checked_by_its_name(
    http: httpx.Client, tmp_path: Path
) -> None:
    service_name = unique("policy")
    cert, key = self_signed(tmp_path, f"DNS:{service_name}.default.svc")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = WebhookServer(
        lambda _r: {"allowed": False, "status": {"message": "refused via a Service", "code": 403}},
        context,
    )
    try:
        port = int(server.url.rsplit(":", 1)[1])
        # A Service whose ClusterIP reaches the webhook without a proxy: loopback.
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service_name},
            "spec": {"clusterIP": "127.0.0.1", "ports": [{"port": port}]},
        }
        assert http.post("/api/v1/namespaces/default/services", json=service).status_code == 201
        marker = unique("svc")
        config = configure(
            http,
            "ValidatingWebhookConfiguration",
            server.url,
            resources=["configmaps"],
            operations=["CREATE"],
            marker=marker,
        )
        current = http.get(config).json()
        current["webhooks"][0]["clientConfig"] = {
            "service": {"namespace": "default", "name": service_name, "port": port},
            "caBundle": base64.b64encode(cert.read_bytes()).decode(),
        }
        assert http.put(config, json=current).status_code == 200
        refused = http.post(CONFIGMAPS, json=configmap(unique("cm"), marker))
        assert refused.status_code == 403, refused.text
        assert refused.json()["message"].endswith("denied the request: refused via a Service")
        http.delete(config)
    finally:
        server.close()


@pytest.mark.kubectl
def test_kubectl_prints_the_webhooks_denial(
    http: httpx.Client, shared_apiserver: RunningApiserver
) -> None:
    server = WebhookServer(
        lambda _r: {"allowed": False, "status": {"message": "no configmaps today", "code": 403}}
    )
    try:
        marker = unique("kubectl")
        config = configure(
            http,
            "ValidatingWebhookConfiguration",
            server.url,
            resources=["configmaps"],
            operations=["CREATE"],
            marker=marker,
        )
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(shared_apiserver.kubeconfig), "create", "-f", "-"],
            input=json.dumps(configmap(unique("cm"), marker)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert (
            f'admission webhook "{marker}.hooks.minik8s.test" denied the request: '
            "no configmaps today"
        ) in result.stderr
        http.delete(config)
    finally:
        server.close()
