"""ClusterIP allocation: claim an address by creating an IPAddress object named after it.

The same scheme as upstream's IPAddress allocator: the API server's uniqueness of object
names is the lock. Creating ``networking.k8s.io/v1`` IPAddress ``10.96.0.12`` succeeds for
exactly one claimant; everybody else gets AlreadyExists and tries the next candidate. No
bitmap, no repair loop, and any number of operator replicas can allocate at once.

Candidates start at a random offset in the range and wrap around (random start keeps two
replicas from walking the same sequence in lock-step). The network and broadcast
addresses are never handed out.

A claim also records which Service *object* it is for: upstream's ``parentRef`` names the
Service (namespace, name), and a Service deleted and created again under the same name
has the same one. The annotation ``ipallocator.minik8s.io/service-uid`` holds the
Service's uid, so the old Service's release can tell its claim from the new one's. A
Service taking over a claim of its name that records another uid (or none) marks it
with its own uid: a write, under a resourceVersion precondition, so that a deletion of
the claim decided before it (a release, the sweep) fails its own resourceVersion
precondition instead of taking the address from the new Service.

The pure parts (ranges, candidates, claim bodies, which claims are orphaned or
releasable) are plain functions; ``claim_any`` / ``claim_requested`` / ``release`` take a
``ClaimApi``, the narrow seam to the API server, so they are unit-tested against an
in-memory fake.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from minik8s.client import AlreadyExists, ApiClient, Conflict, NotFound

logger = logging.getLogger(__name__)

DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
IPADDRESS_API_VERSION = "networking.k8s.io/v1"
MANAGED_BY_LABEL = "ipaddress.kubernetes.io/managed-by"
MANAGED_BY = "ipallocator.minik8s.io"
OWNER_UID_ANNOTATION = "ipallocator.minik8s.io/service-uid"
CLAIMED_AT_ANNOTATION = "ipallocator.minik8s.io/claimed-at"  # set when a claim is taken over

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
RawObject = dict[str, Any]


class IpamError(Exception):
    """Base of the allocation errors; each message says what to do next."""


class InvalidServiceCIDR(IpamError):
    pass


class InvalidAddress(IpamError):
    pass


class AddressOutOfRange(IpamError):
    pass


class AddressInUse(IpamError):
    pass


class RangeExhausted(IpamError):
    pass


class ClaimExists(Exception):
    """Raised by a ``ClaimApi`` when the IPAddress object already exists (HTTP 409)."""


@dataclass(frozen=True, slots=True)
class ParentRef:
    """The Service an address is claimed for."""

    namespace: str
    name: str

    def to_wire(self) -> dict[str, str]:
        return {"group": "", "resource": "services", "namespace": self.namespace, "name": self.name}

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Holder:
    """Whom a claim is for: the Service's name and, when recorded, its uid."""

    parent: ParentRef
    uid: str | None = None


class ClaimApi(Protocol):
    """What allocation needs from the API server (IPAddress objects, cluster-scoped)."""

    async def create_claim(self, body: RawObject) -> RawObject:
        """Create an IPAddress; raise ``ClaimExists`` if the name is taken."""
        ...

    async def get_claim(self, name: str) -> RawObject | None:
        """The IPAddress of that name, or None."""
        ...

    async def delete_claim(
        self, name: str, *, uid: str | None = None, resource_version: str | None = None
    ) -> bool:
        """Delete an IPAddress, only if its uid and resourceVersion are still these (when
        given); False if it is gone or changed."""
        ...

    async def mark_claim(
        self, name: str, *, resource_version: str, owner_uid: str, claimed_at: str
    ) -> bool:
        """Record ``owner_uid`` (and ``claimed_at``) on an IPAddress, only if its
        resourceVersion is still ``resource_version``; False if it is gone or changed."""
        ...


# -- pure: ranges and candidates ------------------------------------------------------


def parse_service_cidr(text: str) -> Network:
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise InvalidServiceCIDR(
            f"service CIDR {text!r} is not valid ({exc}); pass e.g. --service-cidr 10.96.0.0/12"
        ) from None
    if net.num_addresses < 4:
        raise InvalidServiceCIDR(
            f"service CIDR {text!r} is too small; use at least 4 addresses (a /30, or /126)"
        )
    return net


def _bounds(net: Network) -> tuple[int, int]:
    """First and last usable address as integers (inclusive)."""
    first, last = int(net.network_address), int(net.broadcast_address)
    # skip the network address; for IPv4 also the broadcast (IPv6 has none)
    first += 1
    if net.version == 4:
        last -= 1
    return first, last


def range_size(net: Network) -> int:
    first, last = _bounds(net)
    return last - first + 1


def contains(net: Network, ip: Address) -> bool:
    if ip.version != net.version:
        return False
    first, last = _bounds(net)
    return first <= int(ip) <= last


def candidates(net: Network, start: int = 0) -> Iterator[Address]:
    """Every usable address once, from offset ``start`` (mod the range size), wrapping."""
    first, _ = _bounds(net)
    size = range_size(net)
    start %= size
    make = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    for i in range(size):
        yield make(first + (start + i) % size)


def random_start(net: Network, rng: random.Random | None = None) -> int:
    return (rng or random).randrange(range_size(net))


def claim_name(ip: Address) -> str:
    """The IPAddress object name for an address (its canonical text, as upstream)."""
    return str(ip)


def claim_body(ip: Address, parent: ParentRef, owner_uid: str | None = None) -> RawObject:
    meta: RawObject = {"name": claim_name(ip), "labels": {MANAGED_BY_LABEL: MANAGED_BY}}
    if owner_uid:
        meta["annotations"] = {OWNER_UID_ANNOTATION: owner_uid}
    return {
        "apiVersion": IPADDRESS_API_VERSION,
        "kind": "IPAddress",
        "metadata": meta,
        "spec": {"parentRef": parent.to_wire()},
    }


def parent_of(claim: Mapping[str, Any]) -> ParentRef | None:
    """The Service a claim belongs to, or None if it is not a Service claim."""
    ref = (claim.get("spec") or {}).get("parentRef") or {}
    if ref.get("resource") != "services" or (ref.get("group") or "") != "":
        return None
    if not ref.get("name"):
        return None
    return ParentRef(namespace=ref.get("namespace") or "", name=ref["name"])


def owner_uid_of(claim: Mapping[str, Any]) -> str | None:
    """The uid of the Service object a claim records, or None (not recorded)."""
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    return annotations.get(OWNER_UID_ANNOTATION) or None


def holder_of(claim: Mapping[str, Any]) -> Holder | None:
    parent = parent_of(claim)
    return None if parent is None else Holder(parent, owner_uid_of(claim))


def canonical(text: str) -> str | None:
    """The claim name for an address as a Service spells it, or None if it is none."""
    try:
        return claim_name(ipaddress.ip_address(text))
    except ValueError:
        return None


def parse_requested(text: str, net: Network) -> Address:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidAddress(
            f"spec.clusterIP {text!r} is not an IP address; leave it empty to get one allocated"
        ) from None
    if not contains(net, ip):
        raise AddressOutOfRange(
            f"spec.clusterIP {ip} is not in the service CIDR {net} (network and broadcast "
            "addresses excluded); pick an address in range or leave it empty"
        )
    return ip


def count_in_range(net: Network, used: Iterable[str]) -> int:
    n = 0
    for text in used:
        try:
            if contains(net, ipaddress.ip_address(text)):
                n += 1
        except ValueError:
            continue
    return n


# -- what is claimed, as last seen (a hint) ------------------------------------------


class ClaimHints(Collection[str]):
    """IPAddress names -> whom they are for, as a watch last reported them.

    A hint only: it lets allocation skip taken addresses without a round trip and tells
    whether a Service already has a claim (or one in flight); the create decides. Each
    entry remembers the claim object's uid, so that the late deletion event of an old
    claim does not remove the entry of a newer claim of the same name (kopf handles the
    events of different objects concurrently).
    """

    def __init__(self) -> None:
        self._holders: dict[str, Holder | None] = {}
        self._uids: dict[str, str | None] = {}
        self._by_holder: dict[Holder, set[str]] = {}

    def add(self, name: str, holder: Holder | None, *, uid: str | None = None) -> None:
        self._drop(name)
        self._holders[name] = holder
        self._uids[name] = uid
        if holder is not None:
            self._by_holder.setdefault(holder, set()).add(name)

    def remove(self, name: str, *, uid: str | None = None) -> None:
        """Forget ``name``; with ``uid``, only if the entry is that claim's (or one this
        process added before the watch reported its uid)."""
        known = self._uids.get(name)
        if uid is not None and known is not None and known != uid:
            return
        self._drop(name)

    def _drop(self, name: str) -> None:
        self._uids.pop(name, None)
        holder = self._holders.pop(name, None)
        if holder is not None:
            names = self._by_holder.get(holder)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._by_holder[holder]

    def holder(self, name: str) -> Holder | None:
        return self._holders.get(name)

    def parent(self, name: str) -> ParentRef | None:
        holder = self._holders.get(name)
        return None if holder is None else holder.parent

    def claims_of(self, holder: Holder) -> set[str]:
        return set(self._by_holder.get(holder, ()))

    def __contains__(self, name: object) -> bool:
        return name in self._holders

    def __len__(self) -> int:
        return len(self._holders)

    def __iter__(self) -> Iterator[str]:
        return iter(self._holders)


# -- claiming (through the ClaimApi seam) ---------------------------------------------


async def claim_any(
    api: ClaimApi,
    net: Network,
    parent: ParentRef,
    *,
    in_use: Collection[str] = (),
    rng: random.Random | None = None,
    owner_uid: str | None = None,
) -> Address:
    """Claim a free address for ``parent`` (the Service object ``owner_uid``, if known).

    ``in_use`` is a hint (e.g. an informer cache of IPAddress names) to skip addresses
    known to be taken without a round trip; it may be stale either way, because the
    create is what decides.
    """
    size = range_size(net)
    if len(in_use) >= size and count_in_range(net, in_use) >= size:
        raise _exhausted(net, size)
    tried = 0
    for ip in candidates(net, random_start(net, rng)):
        name = claim_name(ip)
        if name in in_use:
            continue
        tried += 1
        try:
            await api.create_claim(claim_body(ip, parent, owner_uid))
        except ClaimExists:
            logger.debug("ClusterIP %s already claimed, trying the next one", ip)
            continue
        logger.debug("claimed %s for %s after %d attempt(s)", ip, parent, tried)
        return ip
    raise _exhausted(net, size)


def _exhausted(net: Network, size: int) -> RangeExhausted:
    return RangeExhausted(
        f"no free ClusterIP left in service CIDR {net} ({size} addresses, all claimed); "
        "delete unused Services or restart the operators with a larger --service-cidr"
    )


async def claim_requested(
    api: ClaimApi,
    net: Network,
    text: str,
    parent: ParentRef,
    *,
    owner_uid: str | None = None,
    now: datetime | None = None,
) -> Address:
    """Claim the address a user asked for, or refuse it with a clear message.

    A claim already made for a Service of the same name is taken over: if it records
    another uid than ``owner_uid`` (or none), it may be the claim of a deleted Service of
    that name whose release is still to run, so it is marked with ``owner_uid`` (see
    ``mark``). Without ``owner_uid`` (the caller cannot tell which Service object it
    claims for) such a claim is accepted as it is.
    """
    ip = parse_requested(text, net)
    name = claim_name(ip)
    for _attempt in range(3):
        try:
            await api.create_claim(claim_body(ip, parent, owner_uid))
            return ip
        except ClaimExists:
            pass
        existing = await api.get_claim(name)
        if existing is None:
            continue  # released between our create and get: try again
        owner = parent_of(existing)
        if owner != parent:
            raise AddressInUse(
                f"spec.clusterIP {ip} is already allocated"
                + (f" to Service {owner}" if owner else "")
                + "; pick another address or leave spec.clusterIP empty"
            )
        if owner_uid is None or owner_uid_of(existing) == owner_uid:
            return ip
        if await mark(api, existing, owner_uid, now=now):
            logger.debug("took over the claim on %s for %s (uid %s)", ip, parent, owner_uid)
            return ip
        # changed or deleted since we read it: look again
    raise AddressInUse(f"spec.clusterIP {ip} is being claimed and released concurrently; try again")


async def mark(
    api: ClaimApi, claim: Mapping[str, Any], owner_uid: str, *, now: datetime | None = None
) -> bool:
    """Record ``owner_uid`` on ``claim`` if it has not changed since it was read.

    The write moves the claim's resourceVersion past any deletion of the Service it
    was made for (this project's resourceVersions are the store's revisions), and the
    ``claimed-at`` time restarts its grace period in the sweep: a release or a sweep
    that decided on the claim before fails its resourceVersion precondition, one that
    reads it after keeps it.
    """
    meta = claim.get("metadata") or {}
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return await api.mark_claim(
        meta["name"],
        resource_version=str(meta.get("resourceVersion") or ""),
        owner_uid=owner_uid,
        claimed_at=stamp,
    )


def _revision(obj: Mapping[str, Any] | None) -> int | None:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


def releasable(
    claim: Mapping[str, Any],
    parent: ParentRef,
    *,
    owner_uid: str | None = None,
    deleted_at: str | None = None,
) -> bool:
    """Whether ``claim`` is the claim of the deleted Service ``parent`` (uid ``owner_uid``,
    deleted at resourceVersion ``deleted_at``).

    Not if it names another Service, records another Service object's uid, or was
    written after the deletion (a Service of the same name created since took it over).
    """
    if parent_of(claim) != parent:
        return False
    recorded = owner_uid_of(claim)
    if owner_uid and recorded and recorded != owner_uid:
        return False
    claim_rv, deletion_rv = (
        _revision(claim),
        _revision({"metadata": {"resourceVersion": deleted_at}}),
    )
    return claim_rv is None or deletion_rv is None or claim_rv <= deletion_rv


async def delete_exactly(api: ClaimApi, claim: Mapping[str, Any]) -> bool:
    """Delete ``claim`` only if it is still that object, unchanged since it was read."""
    meta = claim.get("metadata") or {}
    return await api.delete_claim(
        meta["name"], uid=meta.get("uid"), resource_version=meta.get("resourceVersion")
    )


async def release(
    api: ClaimApi,
    ip_text: str,
    parent: ParentRef,
    *,
    owner_uid: str | None = None,
    deleted_at: str | None = None,
) -> bool:
    """Delete the claim on ``ip_text`` if it is ``parent``'s (see ``releasable``); True if
    deleted. The delete is conditional on the claim being unchanged since it was read."""
    name = canonical(ip_text)
    if name is None:
        return False
    existing = await api.get_claim(name)
    if existing is None:
        return False
    if not releasable(existing, parent, owner_uid=owner_uid, deleted_at=deleted_at):
        return False
    return await delete_exactly(api, existing)


# -- the sweep (pure) -----------------------------------------------------------------


def service_addresses(service: Mapping[str, Any]) -> set[str]:
    spec = service.get("spec") or {}
    ips = {ip for ip in spec.get("clusterIPs") or [] if ip and ip != "None"}
    if spec.get("clusterIP") and spec["clusterIP"] != "None":
        ips.add(spec["clusterIP"])
    return ips


def _timestamp(text: object) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def claimed_at(claim: Mapping[str, Any]) -> datetime | None:
    """When a claim was made, or last taken over by a Service (its ``claimed-at``)."""
    meta = claim.get("metadata") or {}
    created = _timestamp(meta.get("creationTimestamp"))
    taken = _timestamp((meta.get("annotations") or {}).get(CLAIMED_AT_ANNOTATION))
    if created is None or taken is None:
        return created or taken
    return max(created, taken)


def orphaned_claims(
    claims: Iterable[Mapping[str, Any]],
    services: Iterable[Mapping[str, Any]],
    *,
    now: datetime,
    grace: timedelta,
) -> list[Mapping[str, Any]]:
    """Our claims that no Service holds, made (or taken over) longer than ``grace`` ago.

    ``services`` must be listed *after* ``claims``: a claim younger than the grace period
    may belong to a create still in flight (claimed by the webhook, not yet stored) and
    is kept; an older one whose Service is gone, or whose Service holds another address
    (a crash between claim and store, a create rejected after admission), is orphaned.
    """
    held: dict[ParentRef, set[str]] = {}
    for svc in services:
        meta = svc.get("metadata") or {}
        ref = ParentRef(namespace=meta.get("namespace") or "", name=meta.get("name") or "")
        held.setdefault(ref, set()).update(service_addresses(svc))
    orphans: list[Mapping[str, Any]] = []
    for claim in claims:
        meta = claim.get("metadata") or {}
        if (meta.get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
            continue
        parent = parent_of(claim)
        if parent is None:
            continue
        if meta.get("name") in held.get(parent, set()):
            continue
        created = claimed_at(claim)
        if created is None or now - created < grace:
            continue
        orphans.append(claim)
    return orphans


# -- the ClaimApi over the project's API client ---------------------------------------


class ApiClaims:
    """``ClaimApi`` on ``minik8s.client.ApiClient``: IPAddress objects on the apiserver."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    async def create_claim(self, body: RawObject) -> RawObject:
        try:
            return await self.api.create(IPADDRESS_API_VERSION, "ipaddresses", body)
        except AlreadyExists:
            raise ClaimExists(body["metadata"]["name"]) from None

    async def get_claim(self, name: str) -> RawObject | None:
        try:
            return await self.api.get(IPADDRESS_API_VERSION, "ipaddresses", name)
        except NotFound:
            return None

    async def delete_claim(
        self, name: str, *, uid: str | None = None, resource_version: str | None = None
    ) -> bool:
        preconditions = {"uid": uid} if uid else {}
        if resource_version:
            preconditions["resourceVersion"] = resource_version
        try:
            await self.api.delete(
                IPADDRESS_API_VERSION, "ipaddresses", name, preconditions=preconditions or None
            )
        except (NotFound, Conflict):
            return False
        return True

    async def mark_claim(
        self, name: str, *, resource_version: str, owner_uid: str, claimed_at: str
    ) -> bool:
        # a merge patch carrying metadata.resourceVersion is conditional on it (409)
        patch = {
            "metadata": {
                "resourceVersion": resource_version,
                "annotations": {
                    OWNER_UID_ANNOTATION: owner_uid,
                    CLAIMED_AT_ANNOTATION: claimed_at,
                },
            }
        }
        try:
            await self.api.patch(IPADDRESS_API_VERSION, "ipaddresses", name, patch)
        except (NotFound, Conflict):
            return False
        return True

    async def list_claims(self) -> list[RawObject]:
        items, _ = await self.api.list(
            IPADDRESS_API_VERSION, "ipaddresses", label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}"
        )
        return items
