"""The base of every API type: Python snake_case names, Kubernetes wire names as aliases.

Wire names are derived from the Python name (``node_name`` -> ``nodeName``) with the
acronyms Kubernetes spells in capitals (``cluster_ip`` -> ``clusterIP``, ``pod_cidrs`` ->
``podCIDRs``, ``container_id`` -> ``containerID``); a field whose wire name breaks the rule
declares its alias explicitly. Unknown fields are kept (``extra="allow"``) so that a newer
client's objects survive a round trip, and every optional field defaults to ``None`` so that
``to_wire()`` gives back exactly what was parsed.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

# Tokens spelled in capitals when they are not the first word of a wire name.
_ACRONYMS = {
    "ip": "IP",
    "ips": "IPs",
    "id": "ID",
    "pid": "PID",
    "ipc": "IPC",
    "cidr": "CIDR",
    "cidrs": "CIDRs",
    "uid": "UID",
    "uuid": "UUID",
    "url": "URL",
}


def wire_name(python_name: str) -> str:
    """``cluster_ip`` -> ``clusterIP``; ``ip_families`` -> ``ipFamilies``."""
    first, *rest = python_name.rstrip("_").split("_")
    return first + "".join(_ACRONYMS.get(word, word[:1].upper() + word[1:]) for word in rest)


class KubeModel(BaseModel):
    """A fragment of a Kubernetes object (spec, status, a port...).

    Validators are built when a model is first used (``defer_build``): a process builds
    only the ones it needs, and not at import (``minik8s up`` needs the Namespace's before
    it is ready, the other kinds' on their first write)."""

    model_config = ConfigDict(
        alias_generator=wire_name,
        populate_by_name=True,
        extra="allow",
        defer_build=True,
    )

    OPEN: ClassVar[bool] = False
    """True when extra fields are part of the type (a volume's source), not unknown fields."""

    def to_wire(self) -> dict[str, Any]:
        """The Kubernetes JSON form: wire names, no unset fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Self:
        return cls.model_validate(data)


class KubeObject(KubeModel):
    """A top-level kind. Subclasses set ``GROUP``, ``VERSION`` and ``KIND``."""

    GROUP: ClassVar[str] = ""
    VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = ""
    PLURAL: ClassVar[str] = ""

    @classmethod
    def api_version_string(cls) -> str:
        return f"{cls.GROUP}/{cls.VERSION}" if cls.GROUP else cls.VERSION
