"""Unmodified kopf against a real apiserver: handlers, finalizers, indexes, timers, daemons,
retries, status patches, admission webhooks and peering, through ``kopf.testing.KopfRunner``.

kopf logs in with its own fallback (the kubernetes client reading ``KUBECONFIG``): the
tests point ``KUBECONFIG`` at the kubeconfig the test apiserver wrote, as a user points it
at the one ``minik8s up`` writes. No login handler anywhere.
"""

from __future__ import annotations

import itertools
import logging
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest
import yaml
from kopf._core.intents.registries import SmartOperatorRegistry  # kopf's default registry
from kopf.testing import KopfRunner
from kubernetes.config import kube_config

from tests.support.poll import wait_for
from tests.support.server import RunningApiserver, running_apiserver

GROUP = "kopf.minik8s.test"
PLURAL = "kopfwidgets"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
BASE = f"/apis/{GROUP}/v1/namespaces/default/{PLURAL}"
_names = itertools.count()

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"kind": "KopfWidget", "plural": PLURAL, "singular": "kopfwidget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "color": {"type": "string"},
                                    "size": {"type": "integer"},
                                    "owner": {"type": "string"},
                                },
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}


class Journal:
    """What the handlers did, as (what, name) pairs; shared with the operator's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[tuple[str, str]] = []
        self.snapshots: dict[str, Any] = {}

    def add(self, what: str, name: str) -> None:
        with self._lock:
            self.entries.append((what, name))

    def count(self, what: str, name: str) -> int:
        with self._lock:
            return Counter(self.entries)[(what, name)]

    def has(self, what: str, name: str) -> bool:
        return self.count(what, name) > 0


def fast_settings(priority: int = 0) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 10
    settings.watching.client_timeout = 15
    settings.watching.connect_timeout = 5
    settings.networking.request_timeout = 10
    settings.peering.priority = priority
    settings.peering.lifetime = 5
    settings.peering.stealth = True
    settings.persistence.consistency_timeout = 5
    settings.posting.level = 20
    return settings


def widget_operator(journal: Journal) -> SmartOperatorRegistry:
    """A kopf operator on KopfWidgets using every kind of handler the tests check."""
    registry = SmartOperatorRegistry()

    @kopf.on.create(GROUP, PLURAL, id="widget_created", registry=registry)
    def widget_created(name: str, body: kopf.Body, patch: kopf.Patch, **_: Any) -> dict[str, str]:
        journal.add("create", name)
        patch.status["phase"] = "Created"
        kopf.info(body, reason="Created", message=f"widget {name} seen by kopf")
        return {"message": "hello"}

    @kopf.on.create(GROUP, PLURAL, id="widget_retried", registry=registry)
    def widget_retried(name: str, retry: int, **_: Any) -> dict[str, int]:
        journal.add("retry-attempt", name)
        if retry == 0:
            raise kopf.TemporaryError("not yet", delay=0.2)
        return {"retries": retry}

    @kopf.on.update(GROUP, PLURAL, field="spec", id="widget_updated", registry=registry)
    def widget_updated(name: str, old: Any, new: Any, **_: Any) -> None:
        journal.add("update", name)
        journal.snapshots[f"update:{name}"] = (old, new)

    @kopf.on.delete(GROUP, PLURAL, id="widget_deleted", registry=registry)
    def widget_deleted(name: str, **_: Any) -> None:
        journal.add("delete", name)

    @kopf.index(GROUP, PLURAL, id="widgets_by_color", registry=registry)
    def widgets_by_color(name: str, spec: kopf.Spec, **_: Any) -> dict[str, str]:
        return {str(spec.get("color", "")): name}

    @kopf.timer(GROUP, PLURAL, interval=0.2, id="widget_ticked", registry=registry)
    def widget_ticked(name: str, **kwargs: Any) -> None:
        index: kopf.Index[str, str] = kwargs["widgets_by_color"]  # indexes come by their id
        journal.add("timer", name)
        journal.snapshots["index"] = {k: list(v) for k, v in index.items()}

    @kopf.daemon(GROUP, PLURAL, cancellation_timeout=5, id="widget_watched", registry=registry)
    async def widget_watched(name: str, stopped: kopf.DaemonStopped, **_: Any) -> None:
        journal.add("daemon-start", name)
        await stopped.wait()
        journal.add("daemon-stop", name)

    return registry


# --- fixtures ----------------------------------------------------------------------------


class KopfLogs(logging.Handler):
    """kopf's log messages, as the operators in this process emit them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.threadName or "", record.getMessage()))

    def paused(self, runner: KopfRunner) -> bool:
        """Whether a peered operator is paused: it starts paused until it has seen the
        peering object, then logs each resume and pause."""
        thread = runner._thread.name
        for name, message in reversed(list(self.messages)):
            if name == thread and message.startswith("Resuming operations"):
                return False
            if name == thread and message.startswith("Pausing operations"):
                return True
        return True


@pytest.fixture
def kopf_logs() -> Iterator[KopfLogs]:
    handler = KopfLogs()
    logger = logging.getLogger("kopf")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def api() -> Iterator[RunningApiserver]:
    with running_apiserver() as server:
        with httpx.Client(base_url=server.url) as http:
            resp = http.post(CRDS, json=WIDGET_CRD)
            assert resp.status_code == 201, resp.text
        yield server


@pytest.fixture
def http(api: RunningApiserver, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig))
    # The kubernetes client (kopf's login fallback) reads $KUBECONFIG once, when imported;
    # a user's `kopf run` process has it set before that, this test process does not.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(api.kubeconfig))
    with httpx.Client(base_url=api.url, timeout=10) as client:
        yield client


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "KopfWidget",
        "metadata": {"name": name},
        "spec": spec or {"color": "red", "size": 1},
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def get(http: httpx.Client, name: str) -> dict[str, Any] | None:
    resp = http.get(f"{BASE}/{name}")
    if resp.status_code == 404:
        return None
    assert resp.status_code == 200, resp.text
    found: dict[str, Any] = resp.json()
    return found


def run_operator(
    registry: SmartOperatorRegistry, settings: kopf.OperatorSettings, *args: str
) -> KopfRunner:
    return KopfRunner(
        ["run", "-A", "--verbose", *args], registry=registry, settings=settings, timeout=30
    )


# --- the handler lifecycle -------------------------------------------------------------


def test_kopf_handles_a_widget_from_creation_to_deletion(http: httpx.Client) -> None:
    journal = Journal()
    name = unique("cycle")
    with run_operator(widget_operator(journal), fast_settings(), "--standalone") as runner:
        created = http.post(BASE, json=widget(name, color="red", size=1))
        assert created.status_code == 201, created.text

        # on.create ran, its result and patch.status landed in the status subresource.
        wait_for(lambda: journal.has("create", name), what="the create handler")
        obj = wait_for(
            lambda: (o := get(http, name)) and (o.get("status") or {}).get("widget_created") and o,
            what="the create handler's status",
        )
        assert obj["status"]["phase"] == "Created"
        assert obj["status"]["widget_created"] == {"message": "hello"}
        assert "kopf.zalando.org/KopfFinalizerMarker" in obj["metadata"]["finalizers"]

        # A TemporaryError is retried after its delay, then succeeds.
        obj = wait_for(
            lambda: (o := get(http, name)) and (o.get("status") or {}).get("widget_retried") and o,
            what="the retried handler's success",
        )
        assert obj["status"]["widget_retried"] == {"retries": 1}
        assert journal.count("retry-attempt", name) == 2

        # kopf.info posted an Event about the widget.
        def events() -> list[dict[str, Any]]:
            items = http.get("/api/v1/namespaces/default/events").json()["items"]
            return [e for e in items if e["involvedObject"]["name"] == name]

        event = wait_for(events, what="kopf's event")[0]
        assert event["reason"] == "Created"
        assert event["involvedObject"]["kind"] == "KopfWidget"

        # The timer ticks, sees the index, and the daemon runs.
        wait_for(lambda: journal.count("timer", name) >= 2, what="two timer ticks")
        wait_for(lambda: name in journal.snapshots.get("index", {}).get("red", []), what="index")
        assert journal.has("daemon-start", name)

        # on.update sees the spec change.
        patched = http.patch(
            f"{BASE}/{name}",
            json={"spec": {"size": 2}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200, patched.text
        wait_for(lambda: journal.has("update", name), what="the update handler")
        old, new = journal.snapshots[f"update:{name}"]
        assert (old["size"], new["size"]) == (1, 2)  # field="spec": old and new are specs

        # Deleting: the finalizer holds the object until on.delete ran and the daemon stopped.
        deleted = http.delete(f"{BASE}/{name}")
        assert deleted.status_code in (200, 202), deleted.text
        wait_for(lambda: get(http, name) is None, what="the widget to be gone")
        assert journal.has("delete", name)
        assert journal.has("daemon-stop", name)
    assert runner.exception is None
    assert "Handler 'widget_created' succeeded" in runner.output
    assert "Timer 'widget_ticked' succeeded" in runner.output or journal.count("timer", name) > 1
    assert "Traceback" not in runner.output, runner.output[-3000:]


def test_kopf_notices_a_crd_created_while_it_runs(
    http: httpx.Client, api: RunningApiserver
) -> None:
    group = "late.kopf.minik8s.test"
    journal = Journal()
    registry = SmartOperatorRegistry()

    @kopf.on.create(group, "latecomers", id="latecomer_created", registry=registry)
    def latecomer_created(name: str, **_: Any) -> None:
        journal.add("create", name)

    crd = yaml.safe_load(yaml.safe_dump(WIDGET_CRD))
    crd["metadata"]["name"] = f"latecomers.{group}"
    crd["spec"]["group"] = group
    crd["spec"]["names"] = {"kind": "Latecomer", "plural": "latecomers"}
    hub = api.app.state.api.registry.hub
    watching_before = hub.watcher_count()
    with run_operator(registry, fast_settings(), "--standalone"):
        # kopf watches the CRDs once its first discovery (without the kind) is done.
        wait_for(lambda: hub.watcher_count() > watching_before, what="kopf's first watch")
        assert http.post(CRDS, json=crd).status_code == 201
        path = f"/apis/{group}/v1/namespaces/default/latecomers"
        body = {"apiVersion": f"{group}/v1", "kind": "Latecomer", "metadata": {"name": "late"}}
        assert http.post(path, json=body).status_code == 201
        wait_for(lambda: journal.has("create", "late"), what="the late kind's handler")


# --- peering ---------------------------------------------------------------------------


def install_cluster_peering(http: httpx.Client) -> str:
    """kopf's peering CRDs from crds/ and the "default" ClusterKopfPeering; its URL."""
    root = Path(__file__).resolve().parents[2]
    for doc in yaml.safe_load_all((root / "crds" / "kopf-peering.yaml").read_text()):
        resp = http.post(CRDS, json=doc)
        assert resp.status_code in (201, 409), resp.text
    peering = "/apis/kopf.dev/v1/clusterkopfpeerings"
    body = {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": "default"},
    }
    resp = http.post(peering, json=body)
    assert resp.status_code in (201, 409), resp.text
    return f"{peering}/default"


def peer_count(http: httpx.Client, peering: str) -> int:
    return len(http.get(peering).json().get("status") or {})


def test_two_peered_replicas_only_the_higher_priority_one_handles(
    http: httpx.Client, kopf_logs: KopfLogs
) -> None:
    peering = install_cluster_peering(http)
    low, high = Journal(), Journal()
    low_runner = run_operator(
        widget_operator(low), fast_settings(priority=100), "--peering=default"
    )
    high_runner = run_operator(
        widget_operator(high), fast_settings(priority=200), "--peering=default"
    )

    def peers() -> int:
        return peer_count(http, peering)

    # The high-priority replica first; the low one starts paused (until it has seen the
    # peering object) and, seeing a live higher peer there, stays paused.
    with high_runner:
        wait_for(lambda: peers() == 1, what="the first replica in the peering object")
        with low_runner:
            wait_for(lambda: peers() == 2, what="both replicas in the peering object")
            assert kopf_logs.paused(low_runner)
            name = unique("peered")
            assert http.post(BASE, json=widget(name)).status_code == 201
            wait_for(lambda: high.has("create", name), what="the active replica's handler")
            assert http.delete(f"{BASE}/{name}").status_code in (200, 202)
            wait_for(lambda: get(http, name) is None, what="the widget to be gone")
            assert high.has("delete", name)
            assert not low.has("create", name) and not low.has("delete", name)


# --- admission webhooks ----------------------------------------------------------------


def webhook_operator(journal: Journal) -> SmartOperatorRegistry:
    registry = SmartOperatorRegistry()

    @kopf.on.mutate(GROUP, PLURAL, operations={"CREATE"}, id="default_owner", registry=registry)
    def default_owner(name: str, spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
        journal.add("mutate", name or "")
        if not spec.get("owner"):
            patch.spec["owner"] = "kopf"

    @kopf.on.validate(GROUP, PLURAL, id="refuse_huge", registry=registry)
    def refuse_huge(name: str, spec: kopf.Spec, **_: Any) -> None:
        journal.add("validate", name or "")
        if int(spec.get("size", 0)) > 10:
            raise kopf.AdmissionError("widgets larger than 10 are not allowed", code=422)

    return registry


def webhook_settings(name: str) -> kopf.OperatorSettings:
    settings = fast_settings()
    settings.admission.server = kopf.WebhookServer(addr="127.0.0.1", insecure=True)
    settings.admission.managed = name
    return settings


def test_kopf_mutating_and_validating_webhooks(http: httpx.Client, api: RunningApiserver) -> None:
    journal = Journal()
    managed = "widgets.kopf.minik8s.test"
    configs = "/apis/admissionregistration.k8s.io/v1"
    with run_operator(webhook_operator(journal), webhook_settings(managed), "--standalone"):

        def registered(kind: str) -> bool:
            resp = http.get(f"{configs}/{kind}webhookconfigurations/{managed}")
            return resp.status_code == 200 and bool(resp.json().get("webhooks"))

        # kopf writes the two configurations from two tasks, in no set order.
        wait_for(lambda: registered("mutating"), what="kopf's mutating webhook configuration")
        wait_for(lambda: registered("validating"), what="kopf's validating configuration")

        # The mutating webhook's patch is in the stored object and in the response.
        name = unique("mutated")
        created = http.post(BASE, json=widget(name, color="blue", size=3))
        assert created.status_code == 201, created.text
        assert created.json()["spec"]["owner"] == "kopf"
        assert get(http, name)["spec"]["owner"] == "kopf"  # type: ignore[index]
        assert journal.has("mutate", name) and journal.has("validate", name)

        # The validating webhook refuses, with its own message and code, and nothing is stored.
        huge = unique("huge")
        refused = http.post(BASE, json=widget(huge, size=11))
        assert refused.status_code == 422, refused.text
        assert refused.json()["message"] == (
            'admission webhook "refuse-huge.widgets.kopf.minik8s.test" denied the request: '
            "widgets larger than 10 are not allowed"
        )
        assert get(http, huge) is None

        # kubectl shows the denial to the user.
        manifest = yaml.safe_dump(widget(unique("kubectl"), size=50))
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(api.kubeconfig), "create", "-f", "-"],
            input=manifest,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert "denied the request: widgets larger than 10 are not allowed" in result.stderr

        # An update that makes the widget too large is refused as well.
        patched = http.patch(
            f"{BASE}/{name}",
            json={"spec": {"size": 20}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 422, patched.text

    # After kopf stopped, its non-persistent webhooks were withdrawn: writes are admitted.
    wait_for(lambda: not registered("mutating"), what="the mutating configuration cleaned up")
    wait_for(lambda: not registered("validating"), what="the validating one cleaned up")
    late = http.post(BASE, json=widget(unique("after"), size=11))
    assert late.status_code == 201, late.text


def test_unreachable_webhook_fails_closed_or_open_by_its_policy(http: httpx.Client) -> None:
    configs = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
    hook = {
        "name": "down.widgets.kopf.minik8s.test",
        "clientConfig": {"url": "http://127.0.0.1:9/unreachable"},
        "rules": [
            {
                "operations": ["CREATE"],
                "apiGroups": [GROUP],
                "apiVersions": ["v1"],
                "resources": [PLURAL],
            }
        ],
        "objectSelector": {"matchLabels": {"webhook-test": "down"}},
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 2,
    }
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "down"},
        "webhooks": [hook],
    }
    assert http.post(configs, json=config).status_code == 201
    body = widget(unique("closed"))
    body["metadata"]["labels"] = {"webhook-test": "down"}
    refused = http.post(BASE, json=body)
    assert refused.status_code == 500, refused.text
    assert 'failed calling webhook "down.widgets.kopf.minik8s.test"' in refused.json()["message"]
    # Other objects are not affected (objectSelector).
    assert http.post(BASE, json=widget(unique("plain"))).status_code == 201
    hook["failurePolicy"] = "Ignore"
    current = http.get(f"{configs}/down").json()
    current["webhooks"] = [hook]
    assert http.put(f"{configs}/down", json=current).status_code == 200
    body["metadata"]["name"] = unique("open")
    assert http.post(BASE, json=body).status_code == 201
    assert http.delete(f"{configs}/down").status_code == 200


def test_kopf_keeps_running_when_its_crd_is_deleted_and_created_again(
    http: httpx.Client,
) -> None:
    group = "transient.kopf.minik8s.test"
    journal = Journal()
    registry = SmartOperatorRegistry()

    @kopf.on.create(group, "transients", id="transient_created", registry=registry)
    def transient_created(name: str, **_: Any) -> None:
        journal.add("create", name)

    crd = yaml.safe_load(yaml.safe_dump(WIDGET_CRD))
    crd["metadata"]["name"] = f"transients.{group}"
    crd["spec"]["group"] = group
    crd["spec"]["names"] = {"kind": "Transient", "plural": "transients"}
    path = f"/apis/{group}/v1/namespaces/default/transients"

    def transient(name: str) -> dict[str, Any]:
        return {"apiVersion": f"{group}/v1", "kind": "Transient", "metadata": {"name": name}}

    assert http.post(CRDS, json=crd).status_code == 201
    settings = fast_settings()
    settings.watching.server_timeout = 1  # watches end often: a 404 on re-watch would kill kopf
    runner = run_operator(registry, settings, "--standalone")
    with runner:
        assert http.post(path, json=transient("first")).status_code == 201
        wait_for(lambda: journal.has("create", "first"), what="the first object's handler")
        assert http.delete(f"{CRDS}/transients.{group}").status_code in (200, 202)
        wait_for(lambda: http.get(f"{CRDS}/transients.{group}").status_code == 404, what="CRD gone")
        time.sleep(1.5)  # longer than server_timeout: kopf re-watches (or has stopped watching)
        assert runner._thread.is_alive(), "kopf stopped after its CRD was deleted"
        assert http.post(CRDS, json=crd).status_code == 201
        assert http.post(path, json=transient("second")).status_code == 201
        wait_for(lambda: journal.has("create", "second"), what="the handler after re-creation")
    assert runner.exception is None


def test_kopf_in_one_namespace_with_namespaced_peering(http: httpx.Client) -> None:
    root = Path(__file__).resolve().parents[2]
    for doc in yaml.safe_load_all((root / "crds" / "kopf-peering.yaml").read_text()):
        resp = http.post(CRDS, json=doc)
        assert resp.status_code in (201, 409), resp.text
    peering = "/apis/kopf.dev/v1/namespaces/default/kopfpeerings"
    body = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "default"}}
    resp = http.post(peering, json=body)
    assert resp.status_code in (201, 409), resp.text
    other = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "elsewhere"}}
    assert http.post("/api/v1/namespaces", json=other).status_code in (201, 409)

    journal = Journal()
    runner = KopfRunner(
        ["run", "-n", "default", "--verbose", "--peering=default"],
        registry=widget_operator(journal),
        settings=fast_settings(),
        timeout=30,
    )
    with runner:
        wait_for(
            lambda: len(http.get(f"{peering}/default").json().get("status") or {}) == 1,
            what="the operator in the namespaced peering object",
        )
        here, there = unique("here"), unique("there")
        assert http.post(BASE, json=widget(here)).status_code == 201
        elsewhere = f"/apis/{GROUP}/v1/namespaces/elsewhere/{PLURAL}"
        assert http.post(elsewhere, json=widget(there)).status_code == 201
        wait_for(lambda: journal.has("create", here), what="the handler in its namespace")
        assert http.delete(f"{BASE}/{here}").status_code in (200, 202)
        wait_for(lambda: get(http, here) is None, what="the widget to be gone")
        assert not journal.has("create", there)
    assert runner.exception is None


def test_the_paused_replica_takes_over_when_the_active_one_stops(
    http: httpx.Client, kopf_logs: KopfLogs
) -> None:
    peering = install_cluster_peering(http)
    low, high = Journal(), Journal()
    low_runner = run_operator(
        widget_operator(low), fast_settings(priority=100), "--peering=default"
    )
    high_runner = run_operator(
        widget_operator(high), fast_settings(priority=200), "--peering=default"
    )
    with low_runner:
        with high_runner:
            wait_for(lambda: peer_count(http, peering) == 2, what="both replicas peered")
            wait_for(lambda: kopf_logs.paused(low_runner), what="the low replica to pause")
        # The active replica left the peering object on its way out; the other resumes.
        wait_for(lambda: not kopf_logs.paused(low_runner), what="the low replica to resume")
        name = unique("failover")
        assert http.post(BASE, json=widget(name)).status_code == 201
        wait_for(lambda: low.has("create", name), what="the remaining replica's handler")
        assert not high.has("create", name)
    assert low_runner.exception is None and high_runner.exception is None
