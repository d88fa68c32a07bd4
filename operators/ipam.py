"""ClusterIP allocation: claim an address by creating an IPAddress object named after it.

The same scheme as upstream's IPAddress allocator: the API server's uniqueness of object
names is the lock. Creating ``networking.k8s.io/v1`` IPAddress ``10.96.0.12`` succeeds for
exactly one claimant; everybody else gets AlreadyExists and tries the next candidate. No
bitmap, no repair loop, and any number of operator replicas can allocate at once.

Candidates start at a random offset in the range and wrap around (random start keeps two
replicas from walking the same sequence in lock-step). The network and broadcast
addresses are never handed out.

The pure parts (ranges, candidates, claim bodies, which claims are orphaned) are plain
functions; ``claim_any`` / ``claim_requested`` / ``release`` take a ``ClaimApi``, the
narrow seam to the API server, so they are unit-tested against an in-memory fake.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from minik8s.client import AlreadyExists, ApiClient, Conflict, NotFound

logger = logging.getLogger(__name__)

DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
IPADDRESS_API_VERSION = "networking.k8s.io/v1"
MANAGED_BY_LABEL = "ipaddress.kubernetes.io/managed-by"
MANAGED_BY = "ipallocator.minik8s.io"

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


class ClaimApi(Protocol):
    """What allocation needs from the API server (IPAddress objects, cluster-scoped)."""

    async def create_claim(self, body: RawObject) -> RawObject:
        """Create an IPAddress; raise ``ClaimExists`` if the name is taken."""
        ...

    async def get_claim(self, name: str) -> RawObject | None:
        """The IPAddress of that name, or None."""
        ...

    async def delete_claim(self, name: str, *, uid: str | None = None) -> bool:
        """Delete an IPAddress (only if its uid is ``uid`` when given); False if gone."""
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


def claim_body(ip: Address, parent: ParentRef) -> RawObject:
    return {
        "apiVersion": IPADDRESS_API_VERSION,
        "kind": "IPAddress",
        "metadata": {"name": claim_name(ip), "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
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
    """IPAddress names -> their parent Service, as a watch last reported them.

    A hint only: it lets allocation skip taken addresses without a round trip and tells
    whether a Service already has a claim in flight; the create decides.
    """

    def __init__(self) -> None:
        self._parents: dict[str, ParentRef | None] = {}
        self._by_parent: dict[ParentRef, set[str]] = {}

    def add(self, name: str, parent: ParentRef | None) -> None:
        self.remove(name)
        self._parents[name] = parent
        if parent is not None:
            self._by_parent.setdefault(parent, set()).add(name)

    def remove(self, name: str) -> None:
        parent = self._parents.pop(name, None)
        if parent is not None:
            names = self._by_parent.get(parent)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._by_parent[parent]

    def parent(self, name: str) -> ParentRef | None:
        return self._parents.get(name)

    def claims_of(self, parent: ParentRef) -> set[str]:
        return set(self._by_parent.get(parent, ()))

    def __contains__(self, name: object) -> bool:
        return name in self._parents

    def __len__(self) -> int:
        return len(self._parents)

    def __iter__(self) -> Iterator[str]:
        return iter(self._parents)


# -- claiming (through the ClaimApi seam) ---------------------------------------------


async def claim_any(
    api: ClaimApi,
    net: Network,
    parent: ParentRef,
    *,
    in_use: Collection[str] = (),
    rng: random.Random | None = None,
) -> Address:
    """Claim a free address for ``parent``.

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
            await api.create_claim(claim_body(ip, parent))
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
    api: ClaimApi, net: Network, text: str, parent: ParentRef, *, renew: bool = False
) -> Address:
    """Claim the address a user asked for, or refuse it with a clear message.

    A claim that already belongs to the same Service is accepted (the webhook and the
    stored-Service handler both seeing one Service; a second webhook replica). With
    ``renew`` (a Service about to be created) such a claim is replaced by a fresh one:
    it may be the claim of a deleted Service of the same name, whose release must not
    take the address from the new one (see ``release``'s ``deleted_at``).
    """
    ip = parse_requested(text, net)
    for _attempt in range(3):
        try:
            await api.create_claim(claim_body(ip, parent))
            return ip
        except ClaimExists:
            pass
        existing = await api.get_claim(claim_name(ip))
        if existing is None:
            continue  # released between our create and get: try again
        owner = parent_of(existing)
        if owner != parent:
            raise AddressInUse(
                f"spec.clusterIP {ip} is already allocated"
                + (f" to Service {owner}" if owner else "")
                + "; pick another address or leave spec.clusterIP empty"
            )
        if not renew:
            return ip
        uid = (existing.get("metadata") or {}).get("uid")
        await api.delete_claim(claim_name(ip), uid=uid)
        renew = False  # once: if someone else claims it now, it is theirs
    raise AddressInUse(f"spec.clusterIP {ip} is being claimed and released concurrently; try again")


def _revision(obj: Mapping[str, Any] | None) -> int | None:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


async def release(
    api: ClaimApi, ip_text: str, parent: ParentRef, *, deleted_at: str | None = None
) -> bool:
    """Delete the claim on ``ip_text`` if it belongs to ``parent``; True if deleted.

    ``deleted_at`` is the resourceVersion of the Service's deletion: a claim written
    after it belongs to a Service of the same name created since, and is kept. (This
    project's resourceVersions are the store's revision numbers, so they compare.)
    """
    try:
        ip = ipaddress.ip_address(ip_text)
    except ValueError:
        return False
    existing = await api.get_claim(claim_name(ip))
    if existing is None or parent_of(existing) != parent:
        return False
    claim_rv, deletion_rv = (
        _revision(existing),
        _revision({"metadata": {"resourceVersion": deleted_at}}),
    )
    if claim_rv is not None and deletion_rv is not None and claim_rv > deletion_rv:
        return False
    uid = (existing.get("metadata") or {}).get("uid")
    return await api.delete_claim(claim_name(ip), uid=uid)


# -- the sweep (pure) -----------------------------------------------------------------


def service_addresses(service: Mapping[str, Any]) -> set[str]:
    spec = service.get("spec") or {}
    ips = {ip for ip in spec.get("clusterIPs") or [] if ip and ip != "None"}
    if spec.get("clusterIP") and spec["clusterIP"] != "None":
        ips.add(spec["clusterIP"])
    return ips


def _created_at(obj: Mapping[str, Any]) -> datetime | None:
    text = (obj.get("metadata") or {}).get("creationTimestamp")
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def orphaned_claims(
    claims: Iterable[Mapping[str, Any]],
    services: Iterable[Mapping[str, Any]],
    *,
    now: datetime,
    grace: timedelta,
) -> list[Mapping[str, Any]]:
    """Our claims that no Service holds, older than ``grace``.

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
        created = _created_at(claim)
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

    async def delete_claim(self, name: str, *, uid: str | None = None) -> bool:
        try:
            await self.api.delete(
                IPADDRESS_API_VERSION,
                "ipaddresses",
                name,
                preconditions={"uid": uid} if uid else None,
            )
        except (NotFound, Conflict):
            return False
        return True

    async def list_claims(self) -> list[RawObject]:
        items, _ = await self.api.list(
            IPADDRESS_API_VERSION, "ipaddresses", label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}"
        )
        return items
