"""v1 Node: cluster-scoped, status kept on create, the STATUS/ROLES/VERSION columns."""

from __future__ import annotations

from apiserver.strategies.access import dicts, dig, text
from apiserver.strategy import GenericStrategy, RawObject
from apiserver.tables import AGE_COLUMN, NAME_COLUMN, Column
from apiserver.validation import Cause, child, index, one_of, validate_cidr
from minik8s.models import Node

ROLE_PREFIX = "node-role.kubernetes.io/"


class NodeStrategy(GenericStrategy):
    model = Node
    extra_fields = ("spec.unschedulable",)

    def __init__(self) -> None:
        super().__init__(namespaced=False, has_status=True)

    def validate_kind(self, obj: RawObject) -> list[Cause]:
        causes: list[Cause] = []
        for i, cidr in enumerate(dig(obj, "spec", "podCIDRs") or []):
            if isinstance(cidr, str):
                causes += validate_cidr(index("spec.podCIDRs", i), cidr)
        for i, taint in dicts(dig(obj, "spec", "taints")):
            causes += one_of(
                child(index("spec.taints", i), "effect"),
                taint.get("effect"),
                ("NoExecute", "NoSchedule", "PreferNoSchedule"),
            )
        return causes

    def kind_fields(self, obj: RawObject) -> dict[str, str]:
        unschedulable = dig(obj, "spec", "unschedulable") is True
        return {"spec.unschedulable": "true" if unschedulable else "false"}

    columns = (
        NAME_COLUMN,
        Column("Status", lambda obj, now: node_status(obj), description="The status of the node"),
        Column("Roles", lambda obj, now: node_roles(obj), description="The roles of the node"),
        AGE_COLUMN,
        Column(
            "Version",
            lambda obj, now: text(dig(obj, "status", "nodeInfo", "kubeletVersion")),
            description="Kubelet Version reported by the node.",
        ),
        Column(
            "Internal-IP",
            lambda obj, now: node_address(obj, "InternalIP"),
            priority=1,
            description="List of addresses reachable to the node.",
        ),
        Column(
            "External-IP",
            lambda obj, now: node_address(obj, "ExternalIP"),
            priority=1,
            description="List of addresses reachable to the node.",
        ),
        Column(
            "OS-Image",
            lambda obj, now: text(dig(obj, "status", "nodeInfo", "osImage")) or "<unknown>",
            priority=1,
            description="OS Image reported by the node from /etc/os-release.",
        ),
        Column(
            "Kernel-Version",
            lambda obj, now: text(dig(obj, "status", "nodeInfo", "kernelVersion")) or "<unknown>",
            priority=1,
            description="Kernel Version reported by the node from 'uname -r'.",
        ),
        Column(
            "Container-Runtime",
            lambda obj, now: (
                text(dig(obj, "status", "nodeInfo", "containerRuntimeVersion")) or "<unknown>"
            ),
            priority=1,
            description="ContainerRuntime Version reported by the node.",
        ),
    )


def node_status(obj: RawObject) -> str:
    status = "Unknown"
    for _, cond in dicts(dig(obj, "status", "conditions")):
        if cond.get("type") == "Ready":
            status = "Ready" if cond.get("status") == "True" else "NotReady"
    if dig(obj, "spec", "unschedulable") is True:
        status += ",SchedulingDisabled"
    return status


def node_roles(obj: RawObject) -> str:
    labels = dig(obj, "metadata", "labels") or {}
    roles = sorted(
        k.removeprefix(ROLE_PREFIX)
        for k in labels
        if isinstance(k, str) and k.startswith(ROLE_PREFIX) and k != ROLE_PREFIX
    )
    if "kubernetes.io/role" in labels:
        roles.append(str(labels["kubernetes.io/role"]))
    return ",".join(roles) if roles else "<none>"


def node_address(obj: RawObject, kind: str) -> str:
    for _, address in dicts(dig(obj, "status", "addresses")):
        if address.get("type") == kind:
            return text(address.get("address"))
    return "<none>"
