"""The service operator: ClusterIPs for Services (kopf handlers, thin; logic in ipam).

- ``allocate_cluster_ip``: a mutating admission webhook on Service CREATE. It claims an
  address and patches ``spec.clusterIP``/``clusterIPs`` before the Service is stored, so
  the create response (and ``kubectl apply``) already carries the IP. A requested
  address is claimed or refused (in use, out of range) with the reason in the response.
- ``allocate_stored_cluster_ip`` (on.create and on.resume, filtered by ``when=`` to the
  Services that need it): a Service stored without an address (the operator was down,
  the webhook's failurePolicy is Ignore) gets one from the same claim function, written
  with a resourceVersion test so that two replicas cannot both assign one; the loser
  releases its claim. A stored Service whose address has no claim for this very
  Service object (stored while the operator was down, or holding a deleted namesake's
  claim) gets its claim made or taken over, or a Warning Event if another holds it.
- ``release_cluster_ip``: on the Service's DELETED event, its claim is released, unless
  a Service of the same name created since took it over or holds the address. An
  event handler, not on.delete: that needs kopf's finalizer on every Service (a PATCH
  after each create, deletions stuck while no operator runs), and with ``optional=True``
  (no finalizer) kopf calls it only while some other finalizer holds a deletion.
- ``ip_claims`` (an index) and ``follow_ip_addresses`` keep what is claimed at hand: the
  index is complete before any handler runs, the event handler also sees deletions.
- ``Sweeper``: periodically deletes our claims no Service holds, once older than a grace
  period (a crash between claim and store, a create refused after admission), and
  retries Services still without an address or without their own claim.

Only the release and the sweep delete claims, and only a claim unchanged since they
read it (uid and resourceVersion preconditions); a Service taking a claim over writes
it (``ipam.mark``), so such a deletion decided before fails instead of taking the
address from it. See ``operators.ipam`` and docs/operators.md.

kopf keeps no state on Services (``operators.persistence``): no annotations, no
finalizers, so a Service is written once (by its creator) on the fast path. Without a
stored diff base every event of a Service still in need is a "creation" to kopf, so the
handler (idempotent) runs again on each one until the Service is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from minik8s.client import ApiClient, ClientError, Conflict, Invalid, NotFound
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
        # claims this process made or confirmed: address -> the Service object's uid
        self.known_claims: dict[str, str | None] = {}
        self.in_use = ipam.ClaimHints()  # every IPAddress, from a watch

    async def admit(
        self, namespace: str, name: str, spec: Mapping[str, Any], uid: str | None = None
    ) -> list[str]:
        """The ClusterIPs for a Service about to be created ([] = leave it alone)."""
        if not needs_cluster_ip(spec):
            return []
        parent = ParentRef(namespace, name)
        requested = spec.get("clusterIP") or next(iter(spec.get("clusterIPs") or []), "")
        if requested:
            ip = await ipam.claim_requested(
                self.claims, self.network, requested, parent, owner_uid=uid
            )
        else:
            ip = await ipam.claim_any(
                self.claims, self.network, parent, in_use=self.in_use, owner_uid=uid
            )
        self.known_claims[str(ip)] = uid
        self.in_use.add(str(ip), ipam.Holder(parent, uid))
        logger.info("allocated ClusterIP %s to %s", ip, parent)
        return [str(ip)]

    def needs_allocation(
        self,
        body: Mapping[str, Any],
        claims: Mapping[str, Iterable[ipam.Holder | None]] | None = None,
    ) -> bool:
        """Whether a stored Service has no address, or one this operator knows no claim
        of for this very Service object (``claims``: kopf's index of IPAddresses,
        complete from the start). A claim of its name that records another uid (or
        none) may be a deleted Service's whose release is pending: it is taken over."""
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        if meta.get("deletionTimestamp") or not needs_cluster_ip(spec):
            return False
        current = spec.get("clusterIP")
        if not current:
            return True
        uid = meta.get("uid")
        mine = ipam.Holder(
            ParentRef(meta.get("namespace") or "default", meta.get("name") or ""), uid
        )
        return not (
            (current in self.known_claims and self.known_claims[current] == uid)
            or self.in_use.holder(current) == mine
            or mine in (claims or {}).get(current, ())
        )

    async def allocate_stored(
        self,
        body: Mapping[str, Any],
        claims: Mapping[str, Iterable[ipam.Holder | None]] | None = None,
    ) -> None:
        """Give a stored Service without an address one, or claim the one it holds."""
        if not self.needs_allocation(body, claims):
            return
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        parent = ParentRef(meta.get("namespace") or "default", meta["name"])
        uid = meta.get("uid")
        current = spec.get("clusterIP")
        if current:
            await self.claim_held(body, parent, current)
            return
        if self.in_use.claims_of(ipam.Holder(parent, uid)):
            # a claim for it is in flight (another replica, or a webhook whose create
            # failed): its owner writes it, or the sweep frees it and the repair retries
            logger.debug("%s has a ClusterIP claim in flight; not claiming another", parent)
            return
        ip = await ipam.claim_any(
            self.claims, self.network, parent, in_use=self.in_use, owner_uid=uid
        )
        self.in_use.add(str(ip), ipam.Holder(parent, uid))
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
            {"op": "add", "path": "/spec/clusterIP", "value": str(ip)},
            {"op": "add", "path": "/spec/clusterIPs", "value": [str(ip)]},
        ]
        try:
            await self.api.patch(
                "v1", "services", parent.name, patch, parent.namespace, patch_type="json"
            )
        except (Invalid, NotFound, Conflict) as exc:
            # changed (another replica assigned one, the user edited it) or gone: the
            # write certainly did not happen, so the claim goes (if this release fails,
            # the sweep deletes it); the next event brings the new state
            logger.debug("%s changed before its ClusterIP was written: %s", parent, exc)
            with contextlib.suppress(ClientError):
                await ipam.release(self.claims, str(ip), parent, owner_uid=uid)
            return
        # (any other failure, a timeout or a 5xx, propagates: the write may have happened,
        # so the claim stays, and the sweep frees it if the Service does not hold it)
        self.known_claims[str(ip)] = uid
        logger.info("allocated ClusterIP %s to stored Service %s", ip, parent)

    async def claim_held(self, body: Mapping[str, Any], parent: ParentRef, ip: str) -> None:
        uid = (body.get("metadata") or {}).get("uid")
        try:
            await ipam.claim_requested(self.claims, self.network, ip, parent, owner_uid=uid)
        except ipam.IpamError as exc:
            logger.warning("Service %s holds ClusterIP %s without a claim: %s", parent, ip, exc)
            await post_event(self.api, body, "Warning", "ClusterIPNotClaimed", str(exc))
            return
        self.known_claims[ip] = uid

    async def release(self, body: Mapping[str, Any]) -> None:
        """Release a deleted Service's addresses (the DELETED event's object: its
        resourceVersion is the deletion's), unless a Service of the same name, created
        again since, took the claim over or holds the address."""
        meta = body.get("metadata") or {}
        parent = ParentRef(meta.get("namespace") or "default", meta.get("name") or "")
        uid, deleted_at = meta.get("uid"), meta.get("resourceVersion")
        for ip in sorted(ipam.service_addresses(body)):
            name = ipam.canonical(ip)
            if name is None:
                continue
            if self.known_claims.get(name, "") == uid:
                del self.known_claims[name]
            claim = await self.claims.get_claim(name)
            if claim is None or not ipam.releasable(
                claim, parent, owner_uid=uid, deleted_at=deleted_at
            ):
                continue
            if await self.delete_unless_held(claim, parent):
                logger.info("released ClusterIP %s of deleted Service %s", ip, parent)

    async def delete_unless_held(self, claim: Mapping[str, Any], parent: ParentRef) -> bool:
        """Delete ``claim`` unless a Service named ``parent`` holds its address now; only
        if the claim is unchanged since it was read (a Service that took it over since
        has written it). True if deleted."""
        name = claim["metadata"]["name"]
        try:
            svc = await self.api.get("v1", "services", parent.name, parent.namespace)
        except NotFound:
            svc = {}
        if name in {ipam.canonical(ip) for ip in ipam.service_addresses(svc)}:
            return False
        return await ipam.delete_exactly(self.claims, claim)

    def saw_claim(self, type_: str | None, claim: Mapping[str, Any]) -> None:
        """An IPAddress event (the watch behind the hints)."""
        meta = claim.get("metadata") or {}
        name = meta.get("name")
        if not name:
            return
        if type_ == "DELETED":
            self.in_use.remove(name, uid=meta.get("uid"))
            if self.known_claims.get(name, "") == ipam.owner_uid_of(claim):
                del self.known_claims[name]
        else:
            self.in_use.add(name, ipam.holder_of(claim), uid=meta.get("uid"))


class Sweeper:
    """Deletes orphaned claims every ``interval`` seconds (see ipam.orphaned_claims)."""

    def __init__(self, allocator: ServiceAllocator, *, interval: float, grace: float) -> None:
        self.allocator = allocator
        self.interval = interval
        self.grace = timedelta(seconds=grace)
        self._unallocated: set[str] = set()  # Service uids seen without an address

    async def sweep_once(self) -> list[str]:
        claims = await self.allocator.claims.list_claims()  # claims first, then Services
        # ages are taken as of the Services list: a claim older than the grace then, and
        # not held in that list, was not stored within the grace period
        listed_at = datetime.now(UTC)
        services, _ = await self.allocator.api.list("v1", "services")
        orphans = ipam.orphaned_claims(claims, services, now=listed_at, grace=self.grace)
        swept: list[str] = []
        for claim in orphans:
            parent = ipam.parent_of(claim)
            if parent is None:
                continue
            # a last look at its Service (a write may have landed since the list), and
            # the claim deleted only as listed: one taken over since has been written
            if await self.allocator.delete_unless_held(claim, parent):
                name = claim["metadata"]["name"]
                swept.append(name)
                self.allocator.known_claims.pop(name, None)
                logger.info(
                    "swept orphaned ClusterIP claim %s (Service %s holds no such address)",
                    name,
                    parent,
                )
        await self._repair(services, {c["metadata"]["name"]: ipam.holder_of(c) for c in claims})
        return swept

    async def _repair(
        self, services: list[dict[str, Any]], claimed: Mapping[str, ipam.Holder | None]
    ) -> None:
        """Allocate to Services seen without an address at two sweeps in a row (an event
        whose handling failed is not redelivered by kopf), claim addresses Services hold
        without a claim (stored while no operator ran), and take over claims of their
        name made for another Service object (a deleted one of the same name)."""
        unallocated = {}
        for svc in services:
            spec, meta = svc.get("spec") or {}, svc.get("metadata") or {}
            if not needs_cluster_ip(spec) or not meta.get("uid"):
                continue
            if not spec.get("clusterIP"):
                unallocated[meta["uid"]] = svc
                continue
            parent = ParentRef(meta.get("namespace") or "default", meta.get("name") or "")
            name = ipam.canonical(spec["clusterIP"]) or spec["clusterIP"]
            holder = claimed.get(name)
            if name not in claimed or (
                holder is not None and holder.parent == parent and holder.uid != meta["uid"]
            ):
                await self.allocator.claim_held(svc, parent, spec["clusterIP"])
        for uid in sorted(self._unallocated & unallocated.keys()):
            try:
                await self.allocator.allocate_stored(unallocated[uid])
            except ipam.IpamError as exc:
                logger.warning("cannot allocate a ClusterIP to a stored Service: %s", exc)
        self._unallocated = set(unallocated)

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
                ips = await allocator.admit(
                    namespace, name, body.get("spec") or {}, meta.get("uid")
                )
            except ipam.IpamError as exc:
                code = 500 if isinstance(exc, ipam.RangeExhausted) else 422
                raise kopf.AdmissionError(str(exc), code=code) from None
            if ips:
                patch.spec["clusterIP"] = ips[0]
                patch.spec["clusterIPs"] = ips
            elif (body.get("spec") or {}).get("clusterIP") == HEADLESS:
                patch.spec["clusterIPs"] = [HEADLESS]

    @kopf.on.event(
        "networking.k8s.io", "v1", "ipaddresses", id="follow_ip_addresses", registry=registry
    )
    async def follow_ip_addresses(body: kopf.Body, type: str | None, **_: Any) -> None:
        allocator.saw_claim(type, body)

    @kopf.index("networking.k8s.io", "v1", "ipaddresses", id="ip_claims", registry=registry)
    async def ip_claims(body: kopf.Body, **_: Any) -> dict[str, ipam.Holder | None]:
        # an index, not only the event handler above: kopf fills every index before it
        # runs any handler, so Services listed at startup are checked without requests
        return {(body.get("metadata") or {}).get("name") or "": ipam.holder_of(body)}

    def in_need(body: kopf.Body, **kw: Any) -> bool:
        return allocator.needs_allocation(body, kw["ip_claims"])

    @kopf.on.resume(
        "v1",
        "services",
        id="allocate_stored_cluster_ip",
        when=in_need,
        errors=kopf.ErrorsMode.IGNORED,  # no retry state is kept (see the handler)
        registry=registry,
    )
    @kopf.on.create(
        "v1",
        "services",
        id="allocate_stored_cluster_ip",
        when=in_need,
        errors=kopf.ErrorsMode.IGNORED,
        registry=registry,
    )
    async def allocate_stored_cluster_ip(body: kopf.Body, **kw: Any) -> None:
        # kopf keeps no retry state here: a failure is retried on the Service's next
        # event, or by the sweep (a Service seen without an address twice in a row)
        try:
            await allocator.allocate_stored(body, kw["ip_claims"])
        except ipam.IpamError as exc:
            logger.warning("cannot allocate a ClusterIP to stored Service: %s", exc)
            await post_event(allocator.api, body, "Warning", "ClusterIPAllocationFailed", str(exc))
        except ClientError as exc:
            logger.warning("cannot allocate a ClusterIP to stored Service now: %s", exc)

    def deleted(type: str | None, **_: Any) -> bool:
        return type == "DELETED"

    @kopf.on.event("v1", "services", id="release_cluster_ip", when=deleted, registry=registry)
    async def release_cluster_ip(body: kopf.Body, **_: Any) -> None:
        await allocator.release(body)
