"""Admission webhooks: configurations, matching, reviews, patches and failure policies."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from apiserver.admission import (
    CallFailed,
    WebhookAdmission,
    build_review,
    label_selector_matches,
    parse_webhooks,
    read_verdict,
    rule_matches,
    validate_configuration,
)
from apiserver.admission_seam import AdmissionDenied, AdmissionRequest
from apiserver.resources import Resource

SERVICES = Resource("", "v1", "Service", "services", "service", namespaced=True)
NODES = Resource("", "v1", "Node", "nodes", "node", namespaced=False)
NAMESPACES = Resource("", "v1", "Namespace", "namespaces", "namespace", namespaced=False)
GREETINGS = Resource("example.com", "v1", "Greeting", "greetings", "greeting", namespaced=True)


def rule(**overrides: Any) -> dict[str, Any]:
    base = {
        "operations": ["CREATE"],
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "resources": ["services"],
    }
    return {**base, **overrides}


def config(name: str, *hooks: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "webhooks": list(hooks)}


def hook(name: str, url: str = "http://127.0.0.1:9/hook", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "clientConfig": {"url": url},
        "rules": [rule()],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        **extra,
    }


def svc(name: str = "web", labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if labels:
        meta["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"ports": [{"port": 80}]},
    }


# --- matching ------------------------------------------------------------------------


def test_a_rule_matches_operation_group_and_resource() -> None:
    assert rule_matches(rule(), "CREATE", SERVICES)
    assert not rule_matches(rule(), "UPDATE", SERVICES)
    assert not rule_matches(rule(), "CREATE", NODES)
    assert rule_matches(rule(operations=["*"], resources=["*"]), "DELETE", NODES)
    assert not rule_matches(rule(apiGroups=["example.com"]), "CREATE", SERVICES)


def test_subresources_match_only_rules_that_name_them() -> None:
    assert not rule_matches(rule(), "CREATE", SERVICES, "status")
    assert rule_matches(rule(resources=["services/status"]), "CREATE", SERVICES, "status")
    assert rule_matches(rule(resources=["*/*"]), "CREATE", SERVICES, "status")
    assert not rule_matches(rule(resources=["services/*"]), "CREATE", SERVICES)
    assert not rule_matches(rule(resources=["*"]), "CREATE", SERVICES, "status")


def test_scope_limits_rules_to_namespaced_or_cluster_kinds() -> None:
    wide = rule(resources=["*"], scope="Namespaced")
    assert rule_matches(wide, "CREATE", SERVICES)
    assert not rule_matches(wide, "CREATE", NODES)
    assert rule_matches(rule(resources=["*"], scope="Cluster"), "CREATE", NODES)


def test_exact_match_policy_checks_the_version() -> None:
    other = rule(apiGroups=["example.com"], apiVersions=["v2"], resources=["greetings"])
    assert rule_matches(other, "CREATE", GREETINGS)
    assert not rule_matches(other, "CREATE", GREETINGS, exact=True)


def test_label_selectors_with_labels_and_expressions() -> None:
    selector = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "back"]},
            {"key": "skip", "operator": "DoesNotExist"},
        ],
    }
    assert label_selector_matches(selector, {"app": "web", "tier": "front"})
    assert not label_selector_matches(selector, {"app": "web", "tier": "db"})
    assert not label_selector_matches(selector, {"app": "web", "tier": "front", "skip": "1"})
    assert label_selector_matches(None, {})
    assert label_selector_matches({}, {"a": "b"})
    assert label_selector_matches(
        {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}]}, {}
    )


# --- configurations ------------------------------------------------------------------


def test_parse_fills_upstream_defaults() -> None:
    (parsed,) = parse_webhooks(config("c", hook("a.example.com.x")), "mutating")
    assert parsed.failure_policy == "Fail"
    assert parsed.timeout_seconds == 10
    assert parsed.match_policy == "Equivalent"
    assert parsed.url == "http://127.0.0.1:9/hook"


def test_service_client_config_becomes_its_in_cluster_url() -> None:
    entry = hook("a.b.c")
    entry["clientConfig"] = {
        "service": {"namespace": "ns", "name": "hooks", "path": "/m", "port": 8443}
    }
    (parsed,) = parse_webhooks(config("c", entry), "validating")
    assert parsed.url == "https://hooks.ns.svc:8443/m"


def test_kopf_managed_configuration_is_valid() -> None:
    kopf_style = {
        "metadata": {"name": "kopf.example.com"},
        "webhooks": [
            {
                "name": "allocate-ip.kopf.example.com",
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "rules": [rule(scope="*")],
                "objectSelector": None,
                "clientConfig": {"url": "http://127.0.0.1:38472/allocate-ip"},
                "timeoutSeconds": 30,
                "admissionReviewVersions": ["v1", "v1beta1"],
            }
        ],
    }
    assert validate_configuration(kopf_style, "mutating") == []
    assert validate_configuration({"metadata": {"name": "empty"}}, "mutating") == []


def test_invalid_configurations_name_their_fields() -> None:
    bad = hook("short", timeoutSeconds=31, failurePolicy="Maybe")
    bad.pop("sideEffects")
    bad["clientConfig"] = {}
    fields = {c.field for c in validate_configuration(config("c", bad), "validating")}
    assert fields == {
        "webhooks[0].name",
        "webhooks[0].timeoutSeconds",
        "webhooks[0].failurePolicy",
        "webhooks[0].sideEffects",
        "webhooks[0].clientConfig",
    }


# --- reviews -------------------------------------------------------------------------


def test_review_carries_what_kopf_requires() -> None:
    review = build_review(
        AdmissionRequest("CREATE", SERVICES, svc(), None, "default", "web", False), uid="u1"
    )
    request = review["request"]
    assert review["apiVersion"] == "admission.k8s.io/v1"
    assert request["uid"] == "u1"
    assert request["resource"] == {"group": "", "version": "v1", "resource": "services"}
    assert request["kind"] == {"group": "", "version": "v1", "kind": "Service"}
    assert request["userInfo"]["username"]
    assert request["namespace"] == "default"
    assert request["object"]["metadata"]["name"] == "web"
    assert request["oldObject"] is None
    assert request["options"]["kind"] == "CreateOptions"
    assert "subResource" not in request


def test_cluster_scoped_review_has_no_namespace() -> None:
    review = build_review(
        AdmissionRequest("DELETE", NODES, None, {"metadata": {"name": "n"}}, None, "n", True)
    )
    assert "namespace" not in review["request"]
    assert review["request"]["dryRun"] is True
    assert review["request"]["options"]["kind"] == "DeleteOptions"


def encoded(patch: list[dict[str, Any]]) -> str:
    return base64.b64encode(json.dumps(patch).encode()).decode()


def test_verdict_decodes_the_patch() -> None:
    patch = [{"op": "add", "path": "/spec/clusterIP", "value": "10.96.0.42"}]
    answer = {
        "response": {"uid": "u", "allowed": True, "patch": encoded(patch), "patchType": "JSONPatch"}
    }
    verdict = read_verdict(answer, "u")
    assert verdict.allowed
    assert verdict.patch == patch


def test_verdict_with_another_uid_is_refused() -> None:
    from apiserver.admission import ReviewError

    with pytest.raises(ReviewError):
        read_verdict({"response": {"uid": "other", "allowed": True}}, "u")


# --- calls -------------------------------------------------------------------------


@dataclass
class Post:
    """One review as the fake transport received it."""

    url: str
    review: dict[str, Any]
    server_name: str | None


@dataclass
class FakeTransport:
    """The WebhookTransport seam: ``respond(post)`` answers (status, body) or raises."""

    respond: Callable[[Post], Awaitable[tuple[int, bytes]]]
    posts: list[Post] = field(default_factory=list)
    closed: bool = False

    async def post(
        self, url: str, body: bytes, *, ca_bundle: bytes, server_name: str | None
    ) -> tuple[int, bytes]:
        post = Post(url, json.loads(body), server_name)
        self.posts.append(post)
        return await self.respond(post)

    async def close(self) -> None:
        self.closed = True


def answering(handler: Callable[[Post, dict[str, Any]], dict[str, Any]]) -> FakeTransport:
    """A webhook answering ``handler(post, review.request)`` as its response."""

    async def respond(post: Post) -> tuple[int, bytes]:
        response = handler(post, post.review["request"])
        response.setdefault("uid", post.review["request"]["uid"])
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}
        return 200, json.dumps({**review, "response": response}).encode()

    return FakeTransport(respond)


async def test_mutating_webhook_patch_is_applied() -> None:
    patch = [{"op": "add", "path": "/spec/clusterIP", "value": "10.96.0.42"}]
    admission = WebhookAdmission(
        transport=answering(
            lambda _r, _q: {"allowed": True, "patch": encoded(patch), "patchType": "JSONPatch"}
        )
    )
    admission.set_configuration("mutating", config("m", hook("ip.example.com.x")))
    original = svc()
    mutated = await admission.mutate(
        AdmissionRequest("CREATE", SERVICES, original, None, "default", "web", False)
    )
    assert mutated is not None
    assert mutated["spec"]["clusterIP"] == "10.96.0.42"
    assert "clusterIP" not in original["spec"]
    await admission.close()


async def test_no_matching_webhook_means_no_call() -> None:
    def fail(_p: Post, _q: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("called")

    admission = WebhookAdmission(transport=answering(fail))
    admission.set_configuration("validating", config("v", hook("deny.example.com.x")))
    await admission.validate(
        AdmissionRequest("UPDATE", SERVICES, svc(), svc(), "default", "web", False)
    )
    await admission.validate(
        AdmissionRequest("CREATE", NODES, {"metadata": {"name": "n"}}, None, None, "n", False)
    )
    await admission.close()


async def test_denial_carries_the_webhooks_message_and_code() -> None:
    admission = WebhookAdmission(
        transport=answering(
            lambda _r, _q: {
                "allowed": False,
                "status": {"message": "bad names are not allowed", "code": 422},
            }
        )
    )
    admission.set_configuration("validating", config("v", hook("deny.example.com.x")))
    with pytest.raises(AdmissionDenied) as caught:
        await admission.validate(
            AdmissionRequest("CREATE", SERVICES, svc(), None, "default", "web", False)
        )
    assert caught.value.code == 422
    assert caught.value.message == (
        'admission webhook "deny.example.com.x" denied the request: bad names are not allowed'
    )
    await admission.close()


async def test_object_selector_skips_unlabelled_objects() -> None:
    calls: list[str] = []

    def record(_p: Post, request: dict[str, Any]) -> dict[str, Any]:
        calls.append(request["name"])
        return {"allowed": True}

    admission = WebhookAdmission(transport=answering(record))
    admission.set_configuration(
        "validating",
        config("v", hook("sel.example.com.x", objectSelector={"matchLabels": {"check": "yes"}})),
    )
    await admission.validate(
        AdmissionRequest("CREATE", SERVICES, svc("plain"), None, "default", "plain", False)
    )
    await admission.validate(
        AdmissionRequest(
            "CREATE", SERVICES, svc("marked", {"check": "yes"}), None, "default", "marked", False
        )
    )
    assert calls == ["marked"]
    await admission.close()


async def test_namespace_selector_reads_the_namespace_labels() -> None:
    calls: list[str] = []

    def record(_p: Post, request: dict[str, Any]) -> dict[str, Any]:
        calls.append(request["namespace"])
        return {"allowed": True}

    async def labels(namespace: str) -> dict[str, str]:
        return {"watched": "true"} if namespace == "prod" else {}

    admission = WebhookAdmission(labels, transport=answering(record))
    admission.set_configuration(
        "validating",
        config(
            "v", hook("ns.example.com.x", namespaceSelector={"matchLabels": {"watched": "true"}})
        ),
    )
    for ns in ("default", "prod"):
        await admission.validate(
            AdmissionRequest("CREATE", SERVICES, svc(), None, ns, "web", False)
        )
    assert calls == ["prod"]
    await admission.close()


def unreachable() -> FakeTransport:
    async def refuse(_post: Post) -> tuple[int, bytes]:
        raise CallFailed("Cannot connect to host h:443 [Connection refused]")

    return FakeTransport(refuse)


async def test_unreachable_webhook_with_fail_policy_refuses_the_write() -> None:
    admission = WebhookAdmission(transport=unreachable())
    admission.set_configuration("mutating", config("m", hook("down.example.com.x")))
    with pytest.raises(AdmissionDenied) as caught:
        await admission.mutate(
            AdmissionRequest("CREATE", SERVICES, svc(), None, "default", "web", False)
        )
    assert caught.value.code == 500
    assert 'failed calling webhook "down.example.com.x"' in caught.value.message
    assert "Connection refused" in caught.value.message
    await admission.close()


async def test_unreachable_webhook_with_ignore_policy_admits_the_write() -> None:
    admission = WebhookAdmission(transport=unreachable())
    admission.set_configuration(
        "mutating", config("m", hook("down.example.com.x", failurePolicy="Ignore"))
    )
    assert (
        await admission.mutate(
            AdmissionRequest("CREATE", SERVICES, svc(), None, "default", "web", False)
        )
        is None
    )
    await admission.close()


async def test_timeout_counts_as_a_failure() -> None:
    async def slow(_post: Post) -> tuple[int, bytes]:
        raise TimeoutError

    admission = WebhookAdmission(transport=FakeTransport(slow))
    admission.set_configuration(
        "validating", config("v", hook("slow.example.com.x", timeoutSeconds=1))
    )
    with pytest.raises(AdmissionDenied) as caught:
        await admission.validate(
            AdmissionRequest("CREATE", SERVICES, svc(), None, "default", "web", False)
        )
    assert "context deadline exceeded" in caught.value.message
    await admission.close()


async def test_a_non_200_answer_is_a_failed_call() -> None:
    async def broken(_post: Post) -> tuple[int, bytes]:
        return 404, b"404: Not Found"

    admission = WebhookAdmission(transport=FakeTransport(broken))
    admission.set_configuration("mutating", config("m", hook("gone.example.com.x")))
    with pytest.raises(AdmissionDenied) as caught:
        await admission.mutate(
            AdmissionRequest("CREATE", SERVICES, svc(), None, "default", "web", False)
        )
    assert caught.value.code == 500
    assert "the server responded with HTTP 404: 404: Not Found" in caught.value.message
    await admission.close()


async def test_mutating_webhooks_run_in_configuration_name_order() -> None:
    def by_path(post: Post, _q: dict[str, Any]) -> dict[str, Any]:
        value = post.url.rsplit("/", 1)[1]
        patch = [{"op": "add", "path": "/spec/order", "value": value}]
        return {"allowed": True, "patch": encoded(patch), "patchType": "JSONPatch"}

    admission = WebhookAdmission(transport=answering(by_path))
    admission.set_configuration(
        "mutating", config("b", hook("b.example.com.x", url="http://h/second"))
    )
    admission.set_configuration(
        "mutating", config("a", hook("a.example.com.x", url="http://h/first"))
    )
    mutated = await admission.mutate(
        AdmissionRequest("CREATE", SERVICES, svc(), None, "default", "web", False)
    )
    assert mutated is not None and mutated["spec"]["order"] == "second"
    admission.remove_configuration("mutating", "b")
    mutated = await admission.mutate(
        AdmissionRequest("CREATE", SERVICES, svc(), None, "default", "web", False)
    )
    assert mutated is not None and mutated["spec"]["order"] == "first"
    await admission.close()


async def test_the_timeout_bounds_the_whole_call() -> None:
    async def stall(_post: Post) -> tuple[int, bytes]:
        await asyncio.Event().wait()  # never answers: only the timeout ends the call
        raise AssertionError("unreachable")

    admission = WebhookAdmission(transport=FakeTransport(stall))
    admission.set_configuration(
        "validating", config("v", hook("stall.example.com.x", timeoutSeconds=1))
    )
    with pytest.raises(AdmissionDenied) as caught:
        async with asyncio.timeout(30):  # a failure here, not a hang, if it never ends
            await admission.validate(
                AdmissionRequest("CREATE", SERVICES, svc(), None, "default", "web", False)
            )
    assert "context deadline exceeded (1s)" in caught.value.message
    await admission.close()


async def test_a_service_webhook_is_called_at_its_cluster_ip_with_its_dns_name() -> None:
    transport = answering(lambda _p, _q: {"allowed": True})

    async def cluster_ip(namespace: str, name: str) -> str | None:
        return "10.96.0.7" if (namespace, name) == ("hooks", "policy") else None

    admission = WebhookAdmission(service_address=cluster_ip, transport=transport)
    entry = hook("svc.example.com.x")
    entry["clientConfig"] = {
        "service": {"namespace": "hooks", "name": "policy", "path": "/validate", "port": 8443}
    }
    admission.set_configuration("validating", config("v", entry))
    await admission.validate(
        AdmissionRequest("CREATE", SERVICES, svc(), None, "default", "web", False)
    )
    assert [(p.url, p.server_name) for p in transport.posts] == [
        ("https://10.96.0.7:8443/validate", "policy.hooks.svc")
    ]

    entry["clientConfig"]["service"]["name"] = "missing"
    admission.set_configuration("validating", config("v", entry))
    with pytest.raises(AdmissionDenied) as caught:
        await admission.validate(
            AdmissionRequest("CREATE", SERVICES, svc(), None, "default", "web", False)
        )
    assert 'service "hooks/missing" has no ClusterIP' in caught.value.message
    await admission.close()
