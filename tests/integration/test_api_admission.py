"""The admission seam: a policy mutates before validation and vets before storing."""

from __future__ import annotations

from typing import Any

import httpx

from apiserver.admission_seam import AdmissionDenied, AdmissionRequest
from tests.support.server import running_apiserver

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


class Policy:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    async def mutate(self, request: AdmissionRequest) -> dict[str, Any] | None:
        op, resource, obj, name = request.op, request.resource, request.obj, request.name
        self.seen.append(("mutate", op, name))
        if obj is None or resource.plural != "configmaps":
            return None
        labels = obj["metadata"].setdefault("labels", {})
        labels["stamped"] = "yes"
        return obj

    async def validate(self, request: AdmissionRequest) -> None:
        op, old, name = request.op, request.old, request.name
        self.seen.append(("validate", op, name))
        if name.startswith("forbidden-"):
            raise AdmissionDenied(
                f'admission webhook "policy.example.com" denied the request: {name}'
            )
        if op == "DELETE" and (old or {}).get("data", {}).get("keep") == "true":
            raise AdmissionDenied("this ConfigMap is kept", code=422, reason="Invalid")


def test_policies_mutate_deny_and_see_every_verb() -> None:
    policy = Policy()
    with running_apiserver(admission=policy) as api, httpx.Client(base_url=api.url) as http:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ok"}}
        created = http.post(CONFIGMAPS, json=body).json()
        assert created["metadata"]["labels"] == {"stamped": "yes"}

        denied = http.post(CONFIGMAPS, json={**body, "metadata": {"name": "forbidden-1"}})
        assert denied.status_code == 403
        assert denied.json()["reason"] == "Forbidden"
        assert "denied the request: forbidden-1" in denied.json()["message"]
        assert http.get(f"{CONFIGMAPS}/forbidden-1").status_code == 404

        merge = {"Content-Type": "application/merge-patch+json"}
        patched = http.patch(f"{CONFIGMAPS}/ok", json={"data": {"keep": "true"}}, headers=merge)
        assert patched.status_code == 200
        kept = http.delete(f"{CONFIGMAPS}/ok")
        assert kept.status_code == 422 and kept.json()["message"] == "this ConfigMap is kept"
        assert http.get(f"{CONFIGMAPS}/ok").status_code == 200

        ops = {(step, op) for step, op, name in policy.seen if name == "ok"}
        assert {("mutate", "CREATE"), ("validate", "CREATE"), ("mutate", "UPDATE")} <= ops
        assert ("validate", "DELETE") in ops
