"""Kubeconfig: written by ``minik8s up``, read by every component and by kubectl/kopf.

Only what this project needs of the format: one cluster, one user, one context. minik8s
serves plain HTTP on loopback, so the cluster entry has a ``server`` and nothing else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_KUBECONFIG = Path(os.environ.get("MINIK8S_HOME", Path.home() / ".minik8s")) / "kubeconfig"
CONTEXT = "minik8s"


class KubeconfigError(Exception):
    """The kubeconfig is missing or unusable; the message says which and what to do."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    server: str
    namespace: str = "default"
    token: str | None = None
    certificate_authority: str | None = None
    insecure_skip_tls_verify: bool = False


def kubeconfig_document(server: str, *, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server}}],
        "users": [{"name": CONTEXT, "user": {}}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT,
        "preferences": {},
    }


def write_kubeconfig(path: Path | str, server: str, *, namespace: str = "default") -> Path:
    """Write a kubeconfig pointing at ``server``; returns the path written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(kubeconfig_document(server, namespace=namespace)))
    os.replace(tmp, target)
    return target


def resolve_kubeconfig_path(path: Path | str | None = None) -> Path:
    """Explicit path, else $KUBECONFIG (first entry), else ~/.minik8s/kubeconfig."""
    if path:
        return Path(path)
    env = os.environ.get("KUBECONFIG")
    if env:
        return Path(env.split(os.pathsep)[0])
    return DEFAULT_KUBECONFIG


def load_kubeconfig(path: Path | str | None = None) -> ClusterConfig:
    """The current context's cluster of a kubeconfig."""
    source = resolve_kubeconfig_path(path)
    try:
        doc = yaml.safe_load(source.read_text()) or {}
    except FileNotFoundError:
        raise KubeconfigError(
            f"no kubeconfig at {source}: start a cluster with 'minik8s up' or pass --kubeconfig"
        ) from None
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"kubeconfig {source} is not valid YAML: {exc}") from None

    def named(section: str, name: str) -> dict[str, Any]:
        for entry in doc.get(section) or []:
            if entry.get("name") == name:
                return dict(entry)
        raise KubeconfigError(f"kubeconfig {source}: no {section[:-1]} named {name!r}")

    context_name = doc.get("current-context")
    if not context_name:
        raise KubeconfigError(f"kubeconfig {source} has no current-context")
    context = named("contexts", context_name).get("context") or {}
    cluster = named("clusters", context.get("cluster", "")).get("cluster") or {}
    user: dict[str, Any] = {}
    if context.get("user"):
        user = named("users", context["user"]).get("user") or {}
    server = cluster.get("server")
    if not server:
        raise KubeconfigError(
            f"kubeconfig {source}: cluster {context.get('cluster')!r} has no server"
        )
    return ClusterConfig(
        server=str(server).rstrip("/"),
        namespace=context.get("namespace") or "default",
        token=user.get("token"),
        certificate_authority=cluster.get("certificate-authority"),
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
    )
