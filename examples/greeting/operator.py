"""The Greeting operator: a complete kopf operator for the example kind in crds/greeting.yaml.

A ``Greeting`` (``spec.to``, ``spec.greeting``, ``spec.punctuation``) is rendered into a
ConfigMap named ``<name>-greeting`` whose ``message`` is e.g. ``Hello, world!``; the
Greeting's status reports the message and its phase. Changing the spec re-renders the
ConfigMap; deleting the Greeting deletes it (kopf holds a finalizer until then).

Run it against a minik8s cluster with no login code: kopf reads the kubeconfig named by
``KUBECONFIG`` (``minik8s up`` writes ``~/.minik8s/kubeconfig``)::

    KUBECONFIG=~/.minik8s/kubeconfig kopf run -A examples/greeting/operator.py

The rendering is a plain function; the handlers only move data in and out of the API.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from minik8s.client import ApiClient, NotFound

GROUP = "example.minik8s.dev"
PLURAL = "greetings"


def render_message(spec: kopf.Spec | dict[str, Any]) -> str:
    """``Hello, world!`` from a Greeting's spec (defaults as the CRD's schema sets them)."""
    greeting = spec.get("greeting") or "Hello"
    punctuation = spec.get("punctuation") or "!"
    return f"{greeting}, {spec['to']}{punctuation}"


def config_map_for(name: str, namespace: str, uid: str, message: str) -> dict[str, Any]:
    """The ConfigMap a Greeting owns."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{name}-greeting",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "greeting-operator"},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/v1",
                    "kind": "Greeting",
                    "name": name,
                    "uid": uid,
                    "controller": True,
                }
            ],
        },
        "data": {"message": message},
    }


@kopf.on.startup()
async def connect(memo: kopf.Memo, **_: Any) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request
    memo.api = ApiClient.from_kubeconfig()


@kopf.on.cleanup()
async def disconnect(memo: kopf.Memo, **_: Any) -> None:
    await memo.api.close()


@kopf.on.create(GROUP, PLURAL)
@kopf.on.update(GROUP, PLURAL, field="spec")
async def render_greeting(
    spec: kopf.Spec,
    name: str,
    namespace: str | None,
    uid: str,
    body: kopf.Body,
    memo: kopf.Memo,
    patch: kopf.Patch,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    assert namespace is not None  # Greetings are namespaced (crds/greeting.yaml)
    message = render_message(spec)
    config_map = config_map_for(name, namespace, uid, message)
    api: ApiClient = memo.api
    try:
        await api.replace("v1", "configmaps", config_map["metadata"]["name"], config_map, namespace)
    except NotFound:
        await api.create("v1", "configmaps", config_map, namespace)
    patch.status["message"] = message
    patch.status["phase"] = "Ready"
    patch.status["configMap"] = config_map["metadata"]["name"]
    kopf.info(body, reason="Rendered", message=f"rendered {message!r}")
    logger.info("rendered %r into configmap %s", message, config_map["metadata"]["name"])


@kopf.on.delete(GROUP, PLURAL)
async def remove_greeting(
    name: str, namespace: str | None, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    api: ApiClient = memo.api
    try:
        await api.delete("v1", "configmaps", f"{name}-greeting", namespace)
    except NotFound:
        logger.info("configmap %s-greeting was already gone", name)
    else:
        logger.info("deleted configmap %s-greeting", name)
