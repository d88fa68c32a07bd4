"""The service operator: ClusterIPs for Services (kopf handlers, thin; logic in ipam).

- ``allocate_cluster_ip``: a mutating admission webhook on Service CREATE. It claims an
  address and patches ``spec.clusterIP``/``clusterIPs`` before the Service is stored, so
  the create response (and ``kubectl apply``) already carries the IP. A requested
  address is claimed or refused (in use, out of range) with the reason in the response.
- ``allocate_stored_cluster_ip``: a Service stored without an address (the operator was
  down, the webhook's failurePolicy is Ignore) gets one from the same claim function,
  written with a resourceVersion test so that two replicas cannot both assign one; the
  loser releases its claim. A stored Service whose address has no claim (stored while
  the operator was down) gets its claim made, or a Warning Event if another holds it.
- ``release_cluster_ip``: the claim goes when its Service does.
- ``Sweeper``: periodically deletes our claims no Service holds, once older than a grace
  period (a crash between claim and store, a create refused after admission).

No finalizers and no kopf state annotations: every handler is an event handler or a
webhook, so a Service is written once (by its creator) on the fast path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from minik8s.client import ApiClient, ApiError, ClientError, Invalid, NotFound
from operators import ipam
from operators.events import post_event
from operators.ipam import ParentRef

logger = logging.getLogger(__name__)

HEADLESS = "None"
WEBHOOK_ID = "allocate-cluster-ip"


def needs_cluster_ip(spec: Mapping[str, Any]) -> bool:
    """ExternalName Services and headless ones (``clusterIP: None``) get no address."""
    return spec.get("type") != "ExternalName" and spec.get("clusterIP") != HEADLESS


class ServiceAllocator:
    """The operator's state: the API client, the range, what this process claimed."""

    def __init__(self, api: ApiClient, network: ipam.Network) -> None:
        self.api = api
        self.claims = ipam.ApiClaims(api)
        self.network = network
        self.known_claims: set[str] = set()  # claims this process made or has seen

    async def admit(self, namespace: str, name: str, spec: Mapping[str, Any]) -> list[str]:
        """The ClusterIPs for a Service about to be created ([] = leave it alone)."""
        if not needs_cluster_ip(spec):
            return []
        parent = ParentRef(namespace, name)
        requested = spec.get("clusterIP") or next(iter(spec.get("clusterIPs") or []), "")
        if requested:
            ip = await ipam.claim_requested(self.claims, self.network, requested, parent)
        else:
            ip = await ipam.claim_any(self.claims, self.network, parent)
        self.known_claims.add(str(ip))
        logger.info("allocated ClusterIP %s to %s", ip, parent)
        return [str(ip)]

    async def allocate_stored(self, body: Mapping[str, Any]) -> None:
        """Give a stored Service without an address one, or claim the one it holds."""
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        if meta.get("deletionTimestamp") or not needs_cluster_ip(spec):
            return
        parent = ParentRef(meta.get("namespace") or "default", meta["name"])
        current = spec.get("clusterIP")
        if current:
            if current not in self.known_claims:
                await self._claim_held(body, parent, current)
            return
        ip = await ipam.claim_any(self.claims, self.network, parent)
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
            {"op": "add", "path": "/spec/clusterIP", "value": str(ip)},
            {"op": "add", "path": "/spec/clusterIPs", "value": [str(ip)]},
        ]
        try:
            await self.api.patch(
                "v1", "services", parent.name, patch, parent.namespace, patch_type="json"
            )
        except (Invalid, NotFound, ApiError) as exc:
            # changed (another replica assigned one, the user edited it) or gone: the
            # next event brings the new state; never keep an address nobody holds
            await ipam.release(self.claims, str(ip), parent)
            if isinstance(exc, Invalid | NotFound):
                logger.debug("%s changed before its ClusterIP was written: %s", parent, exc)
                return
            raise
        self.known_claims.add(str(ip))
        logger.info("allocated ClusterIP %s to stored Service %s", ip, parent)

    async def _claim_held(self, body: Mapping[str, Any], parent: ParentRef, ip: str) -> None:
        try:
            await ipam.claim_requested(self.claims, self.network, ip, parent)
        except ipam.IpamError as exc:
            logger.warning("Service %s holds ClusterIP %s without a claim: %s", parent, ip, exc)
            await post_event(self.api, body, "Warning", "ClusterIPNotClaimed", str(exc))
            return
        self.known_claims.add(ip)

    async def release(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        parent = ParentRef(meta.get("namespace") or "default", meta.get("name") or "")
        for ip in sorted(ipam.service_addresses(body)):
            if await ipam.release(self.claims, ip, parent):
                logger.info("released ClusterIP %s of deleted Service %s", ip, parent)
            self.known_claims.discard(ip)


class Sweeper:
    """Deletes orphaned claims every ``interval`` seconds (see ipam.orphaned_claims)."""

    def __init__(self, allocator: ServiceAllocator, *, interval: float, grace: float) -> None:
        self.allocator = allocator
        self.interval = interval
        self.grace = timedelta(seconds=grace)

    async def sweep_once(self) -> list[str]:
        claims = await self.allocator.claims.list_claims()  # claims first, then Services
        services, _ = await self.allocator.api.list("v1", "services")
        orphans = ipam.orphaned_claims(claims, services, now=datetime.now(UTC), grace=self.grace)
        swept: list[str] = []
        for claim in orphans:
            meta = claim["metadata"]
            if await self.allocator.claims.delete_claim(meta["name"], uid=meta.get("uid")):
                swept.append(meta["name"])
                self.allocator.known_claims.discard(meta["name"])
                logger.info(
                    "swept orphaned ClusterIP claim %s (Service %s holds no such address)",
                    meta["name"],
                    ipam.parent_of(claim),
                )
        return swept

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep_once()
            except ClientError as exc:
                logger.warning("ClusterIP sweep failed (%s); retrying in %.0fs", exc, self.interval)


def register(
    registry: kopf.OperatorRegistry, allocator: ServiceAllocator, *, webhook: bool = True
) -> None:
    """Attach the service operator's handlers to ``registry``."""

    if webhook:

        @kopf.on.mutate(
            "v1",
            "services",
            operations=["CREATE"],
            id=WEBHOOK_ID,
            ignore_failures=True,
            registry=registry,
        )
        async def allocate_cluster_ip(
            body: kopf.Body, patch: kopf.Patch, dryrun: bool, **_: Any
        ) -> None:
            meta = body.get("metadata") or {}
            namespace, name = meta.get("namespace"), meta.get("name")
            if dryrun or not namespace or not name:
                return  # generateName / no namespace yet: the stored-Service path allocates
            try:
                ips = await allocator.admit(namespace, name, body.get("spec") or {})
            except ipam.IpamError as exc:
                code = 500 if isinstance(exc, ipam.RangeExhausted) else 422
                raise kopf.AdmissionError(str(exc), code=code) from None
            if ips:
                patch.spec["clusterIP"] = ips[0]
                patch.spec["clusterIPs"] = ips
            elif (body.get("spec") or {}).get("clusterIP") == HEADLESS:
                patch.spec["clusterIPs"] = [HEADLESS]

    @kopf.on.event("v1", "services", id="allocate_stored_cluster_ip", registry=registry)
    async def allocate_stored_cluster_ip(body: kopf.Body, type: str | None, **_: Any) -> None:
        if type == "DELETED":
            await allocator.release(body)
            return
        try:
            await allocator.allocate_stored(body)
        except ipam.IpamError as exc:
            # retried on the Service's next event (event handlers are not retried by kopf)
            logger.warning("cannot allocate a ClusterIP to stored Service: %s", exc)
            await post_event(allocator.api, body, "Warning", "ClusterIPAllocationFailed", str(exc))
