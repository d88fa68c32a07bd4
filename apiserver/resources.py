"""What the apiserver serves: one ``Resource`` per (group, version, plural), as data.

``builtin_index()`` holds the built-in kinds; CRDs are added and removed at runtime, and
every change bumps ``ResourceIndex.generation`` so that discovery and OpenAPI caches know
when to rebuild.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

ALL_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)


@dataclass(frozen=True, slots=True)
class Resource:
    group: str
    """"" for the core group."""
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[str, ...] = ()
    list_kind: str = ""

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``group/version`` otherwise (an object's apiVersion)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind_name(self) -> str:
        return self.list_kind or f"{self.kind}List"

    @property
    def group_resource(self) -> str:
        """``services`` or ``endpointslices.discovery.k8s.io``, as messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


class ResourceIndex:
    """The served resources, by (group, version, plural) and by (group, kind)."""

    def __init__(self, resources: tuple[Resource, ...] = ()) -> None:
        self._by_path: dict[tuple[str, str, str], Resource] = {}
        self.generation = 0
        for res in resources:
            self.add(res)

    def add(self, res: Resource) -> None:
        """Add or replace the resource at (group, version, plural)."""
        key = (res.group, res.version, res.plural)
        if self._by_path.get(key) != res:
            self._by_path[key] = res
            self.generation += 1

    def remove(self, res: Resource) -> None:
        if self._by_path.pop((res.group, res.version, res.plural), None) is not None:
            self.generation += 1

    def lookup(self, group: str, version: str, plural: str) -> Resource | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, group: str, kind: str, version: str | None = None) -> Resource | None:
        """The resource serving ``kind`` in ``group`` (at ``version`` if given; else the first)."""
        for res in self._by_path.values():
            if res.group == group and res.kind == kind and version in (None, res.version):
                return res
        return None

    def all(self) -> list[Resource]:
        """Every resource, in the order they were added (core first for the built-ins)."""
        return list(self._by_path.values())

    def groups(self) -> list[str]:
        """Every group that has at least one resource, in first-added order ("" = core)."""
        return list(dict.fromkeys(res.group for res in self._by_path.values()))

    def versions(self, group: str) -> list[str]:
        """The versions served for ``group``, in first-added order (the first is preferred)."""
        return list(dict.fromkeys(r.version for r in self._by_path.values() if r.group == group))

    def __iter__(self) -> Iterator[Resource]:
        return iter(self.all())

    def __len__(self) -> int:
        return len(self._by_path)


BUILTIN_RESOURCES: tuple[Resource, ...] = (
    Resource(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        namespaced=False,
        short_names=("ns",),
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
        subresources=("status",),
    ),
    Resource(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        namespaced=True,
        short_names=("po",),
        categories=("all",),
        subresources=("status",),
    ),
    Resource(
        "",
        "v1",
        "Service",
        "services",
        "service",
        namespaced=True,
        short_names=("svc",),
        categories=("all",),
        subresources=("status",),
    ),
    Resource("", "v1", "Endpoints", "endpoints", "endpoints", namespaced=True, short_names=("ep",)),
    Resource("", "v1", "Event", "events", "event", namespaced=True, short_names=("ev",)),
    Resource(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        namespaced=False,
        short_names=("no",),
        subresources=("status",),
    ),
    Resource(
        "", "v1", "ConfigMap", "configmaps", "configmap", namespaced=True, short_names=("cm",)
    ),
    Resource(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        namespaced=True,
    ),
    Resource(
        "networking.k8s.io",
        "v1",
        "IPAddress",
        "ipaddresses",
        "ipaddress",
        namespaced=False,
        short_names=("ip",),
    ),
    Resource("coordination.k8s.io", "v1", "Lease", "leases", "lease", namespaced=True),
)


def builtin_index() -> ResourceIndex:
    """A fresh index of the built-in kinds (each apiserver owns its own: CRDs mutate it)."""
    return ResourceIndex(BUILTIN_RESOURCES)
