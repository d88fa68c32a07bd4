"""Discovery documents: legacy (/api, /api/v1, /apis, /apis/G/V) and aggregated (v2, v2beta1).

kubectl v1.32 asks /api and /apis for aggregated discovery first
(``Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,...``) and
recognises the answer only by its Content-Type; kubectl 1.28 asks for v2beta1 only. So the
Accept list is parsed in order (``negotiate``) and the first supported entry wins.
"""

from __future__ import annotations

from typing import Any, Literal

from apiserver.resources import Resource, ResourceIndex

RawObject = dict[str, Any]
AggregatedVersion = Literal["v2", "v2beta1"]

DISCOVERY_GROUP = "apidiscovery.k8s.io"
AGGREGATED_KIND = "APIGroupDiscoveryList"
SUBRESOURCE_VERBS: dict[str, tuple[str, ...]] = {"status": ("get", "patch", "update")}


def aggregated_content_type(version: AggregatedVersion) -> str:
    """The exact Content-Type kubectl needs to recognise aggregated discovery."""
    return f"application/json;g={DISCOVERY_GROUP};v={version};as={AGGREGATED_KIND}"


def negotiate(accept: str | None) -> AggregatedVersion | None:
    """The aggregated discovery version the Accept header asks for first; None for legacy.

    Entries are taken in order; the first one that is either aggregated discovery
    (v2 or v2beta1) or something that legacy JSON satisfies decides.
    """
    for entry in (accept or "").split(","):
        parts = [p.strip() for p in entry.split(";")]
        media = parts[0].lower()
        params = {}
        for part in parts[1:]:
            name, _, value = part.partition("=")
            params[name.strip().lower()] = value.strip()
        if media not in ("application/json", "application/*", "*/*"):
            continue
        if params.get("as") == AGGREGATED_KIND and params.get("g") == DISCOVERY_GROUP:
            version = params.get("v")
            if version == "v2":
                return "v2"
            if version == "v2beta1":
                return "v2beta1"
            continue
        if "as" not in params:
            return None
    return None


# --------------------------------------------------------------------------- legacy


def api_versions(server_address: str = "") -> RawObject:
    """``GET /api``: APIVersions."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _api_resource(res: Resource) -> list[RawObject]:
    entry: RawObject = {
        "name": res.plural,
        "singularName": res.singular,
        "namespaced": res.namespaced,
        "kind": res.kind,
        "verbs": list(res.verbs),
    }
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.categories:
        entry["categories"] = list(res.categories)
    entries = [entry]
    for sub in res.subresources:
        entries.append(
            {
                "name": f"{res.plural}/{sub}",
                "singularName": "",
                "namespaced": res.namespaced,
                "kind": res.kind,
                "verbs": list(SUBRESOURCE_VERBS.get(sub, ("get",))),
            }
        )
    return entries


def group_version_resource_list(index: ResourceIndex, group: str, version: str) -> RawObject | None:
    """``GET /api/v1`` or ``GET /apis/G/V``: APIResourceList; None when nothing is served there."""
    resources = [r for r in index.all() if r.group == group and r.version == version]
    if not resources:
        return None
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [entry for r in resources for entry in _api_resource(r)],
    }


def core_resource_list(index: ResourceIndex) -> RawObject:
    """``GET /api/v1``."""
    found = group_version_resource_list(index, "", "v1")
    return found or {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "v1",
        "resources": [],
    }


def _api_group(index: ResourceIndex, group: str) -> RawObject:
    versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in index.versions(group)]
    return {"name": group, "versions": versions, "preferredVersion": versions[0]}


def api_group(index: ResourceIndex, group: str) -> RawObject | None:
    """``GET /apis/G``: APIGroup; None for a group that is not served."""
    if not group or group not in index.groups():
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_api_group(index, group)}


def api_group_list(index: ResourceIndex) -> RawObject:
    """``GET /apis``: APIGroupList (every group but the core one)."""
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_api_group(index, g) for g in index.groups() if g],
    }


# --------------------------------------------------------------------------- aggregated


def _discovery_resource(res: Resource) -> RawObject:
    kind = {"group": res.group, "version": res.version, "kind": res.kind}
    entry: RawObject = {
        "resource": res.plural,
        "responseKind": kind,
        "scope": "Namespaced" if res.namespaced else "Cluster",
        "singularResource": res.singular,
        "verbs": list(res.verbs),
    }
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.categories:
        entry["categories"] = list(res.categories)
    if res.subresources:
        entry["subresources"] = [
            {
                "subresource": sub,
                "responseKind": kind,
                "verbs": list(SUBRESOURCE_VERBS.get(sub, ("get",))),
            }
            for sub in res.subresources
        ]
    return entry


def _group_discovery(index: ResourceIndex, group: str) -> RawObject:
    versions = []
    for version in index.versions(group):
        resources = [r for r in index.all() if r.group == group and r.version == version]
        versions.append(
            {
                "version": version,
                "resources": [_discovery_resource(r) for r in resources],
                "freshness": "Current",
            }
        )
    metadata: RawObject = {"name": group} if group else {}
    return {"metadata": metadata, "versions": versions}


def aggregated(index: ResourceIndex, *, core: bool, version: AggregatedVersion = "v2") -> RawObject:
    """The APIGroupDiscoveryList for ``/api`` (``core=True``) or ``/apis`` (``core=False``);
    serve it with ``aggregated_content_type(version)``."""
    groups = [""] if core else [g for g in index.groups() if g]
    return {
        "kind": AGGREGATED_KIND,
        "apiVersion": f"{DISCOVERY_GROUP}/{version}",
        "metadata": {},
        "items": [_group_discovery(index, g) for g in groups if core or index.versions(g)],
    }


# Names the HTTP layer uses.
aggregated_discovery = aggregated
api_resource_list = group_version_resource_list
