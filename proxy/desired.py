"""Desired IPVS state from Services and EndpointSlices (pure: raw dicts in, state out).

Per ClusterIP service port one virtual server ``clusterIP:port/protocol`` (scheduler
``rr`` unless configured; ``sessionAffinity: ClientIP`` -> persistence for
``sessionAffinityConfig.clientIP.timeoutSeconds``, default 10800 s), whose real servers
are the service's ready endpoints (from every EndpointSlice labelled
``kubernetes.io/service-name``) on the slice port of the same *name* and protocol, with
weight 1 and NAT (masquerade) forwarding. When no endpoint is ready, serving endpoints
that are terminating are used instead (as kube-proxy does). Every such clusterIP is an
address to bind on kube-ipvs0.

Skipped: headless services (clusterIP None), ExternalName, and clusterIPs outside the
service CIDRs the proxy owns.

:func:`desired_state` computes it all at once; :class:`DesiredTracker` keeps it up to date
one object at a time and says which parts changed (:class:`~proxy.state.Touched`), so a
sync after one change costs what that change costs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from proxy.state import (
    PROTOCOLS,
    DestinationSpec,
    IpvsState,
    Protocol,
    RealServer,
    Service,
    ServiceSpec,
    Touched,
    VirtualServer,
)

RawObject = Mapping[str, Any]
ObjectKey = tuple[str, str]  # (namespace, name)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_AFFINITY_TIMEOUT = 10800


@lru_cache(maxsize=65536)
def _parse_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """What the proxy owns (its service CIDRs) and how it programs IPVS."""

    service_cidrs: tuple[IPNetwork, ...] = (ipaddress.ip_network(DEFAULT_SERVICE_CIDR),)
    scheduler: str = "rr"

    @classmethod
    def from_strings(cls, cidrs: Sequence[str], scheduler: str = "rr") -> ProxyConfig:
        """Parse CIDRs such as ``10.96.0.0/12``; a bad one raises ValueError naming it."""
        networks = []
        for text in cidrs:
            try:
                networks.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"bad service CIDR {text!r}: {exc}") from None
        return cls(tuple(networks), scheduler)

    def owns(self, address: str) -> bool:
        """True when ``address`` is inside one of the service CIDRs."""
        ip = _parse_ip(address)
        return ip is not None and any(ip in net for net in self.service_cidrs)


def object_key(obj: RawObject) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def slice_service_key(endpoint_slice: RawObject) -> ObjectKey | None:
    """The (namespace, service name) an EndpointSlice belongs to, from its label."""
    meta = endpoint_slice.get("metadata") or {}
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not name:
        return None
    return str(meta.get("namespace") or ""), str(name)


def trigger_time(endpoint_slice: RawObject) -> datetime | None:
    """The ``last-change-trigger-time`` annotation of a slice, if present and valid."""
    annotations = (endpoint_slice.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(TRIGGER_TIME_ANNOTATION)
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def _service_spec(service: RawObject, config: ProxyConfig) -> ServiceSpec:
    spec = service.get("spec") or {}
    timeout = 0
    if spec.get("sessionAffinity") == "ClientIP":
        client_ip = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        timeout = int(client_ip.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
    return ServiceSpec(scheduler=config.scheduler, persistence_timeout=timeout)


def cluster_ip(service: RawObject, config: ProxyConfig) -> str | None:
    """The service's clusterIP when the proxy should program it, else None."""
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return None
    address = spec.get("clusterIP")
    if not address or address == "None":
        return None
    address = str(address)
    return address if config.owns(address) else None


def _endpoints(
    slices: Iterable[RawObject], port_name: str, protocol: str, family: str
) -> dict[RealServer, DestinationSpec]:
    ready: set[RealServer] = set()
    terminating: set[RealServer] = set()
    for endpoint_slice in slices:
        if (endpoint_slice.get("addressType") or "IPv4") != family:
            continue
        port: int | None = None
        for slice_port in endpoint_slice.get("ports") or []:
            if (slice_port.get("name") or "") == port_name and (
                slice_port.get("protocol") or "TCP"
            ) == protocol:
                port = slice_port.get("port")
                break
        if not port:
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            addresses = endpoint.get("addresses") or []
            if not addresses:
                continue
            # Consumers use the first address (the others are fungible).
            real = RealServer(str(addresses[0]), int(port))
            conditions = endpoint.get("conditions") or {}
            is_ready = conditions.get("ready")
            if is_ready is None or is_ready:
                ready.add(real)
            elif conditions.get("serving") and conditions.get("terminating"):
                terminating.add(real)
    chosen = ready or terminating
    return {real: DestinationSpec() for real in sorted(chosen)}


def service_virtual_servers(
    service: RawObject, slices: Iterable[RawObject], config: ProxyConfig
) -> dict[VirtualServer, Service]:
    """The virtual servers (with destinations) one Service and its slices ask for."""
    address = cluster_ip(service, config)
    if address is None:
        return {}
    ip = _parse_ip(address)
    family = "IPv6" if ip is not None and ip.version == 6 else "IPv4"
    spec = _service_spec(service, config)
    slices = list(slices)
    out: dict[VirtualServer, Service] = {}
    for service_port in (service.get("spec") or {}).get("ports") or []:
        protocol = str(service_port.get("protocol") or "TCP")
        if protocol not in PROTOCOLS or not service_port.get("port"):
            continue
        proto: Protocol = protocol  # type: ignore[assignment]
        vs = VirtualServer(address, int(service_port["port"]), proto)
        port_name = str(service_port.get("name") or "")
        out[vs] = Service(spec, _endpoints(slices, port_name, protocol, family))
    return out


def desired_state(
    services: Iterable[RawObject], slices: Iterable[RawObject], config: ProxyConfig
) -> IpvsState:
    """The whole desired state from every Service and EndpointSlice, at once."""
    tracker = DesiredTracker(config)
    for endpoint_slice in slices:
        tracker.upsert_slice(endpoint_slice)
    for service in services:
        tracker.upsert_service(service)
    return tracker.state


@dataclass(slots=True)
class DesiredTracker:
    """The desired state, maintained one Service / EndpointSlice event at a time.

    :attr:`state` is always the desired state of everything seen so far;
    :meth:`take_touched` returns (and forgets) which virtual servers and addresses
    changed since the last call.
    """

    config: ProxyConfig
    state: IpvsState = field(default_factory=IpvsState)
    _services: dict[ObjectKey, RawObject] = field(default_factory=dict)
    _slices: dict[ObjectKey, RawObject] = field(default_factory=dict)
    _slices_by_service: dict[ObjectKey, dict[ObjectKey, RawObject]] = field(default_factory=dict)
    _fragments: dict[ObjectKey, dict[VirtualServer, Service]] = field(default_factory=dict)
    _claims: dict[VirtualServer, set[ObjectKey]] = field(default_factory=dict)
    _address_claims: dict[str, set[ObjectKey]] = field(default_factory=dict)
    _touched_vs: set[VirtualServer] = field(default_factory=set)
    _touched_addresses: set[str] = field(default_factory=set)

    # -------------------------------------------------------------- events

    def upsert_service(self, service: RawObject) -> None:
        key = object_key(service)
        self._services[key] = service
        self._recompute(key)

    def delete_service(self, service: RawObject) -> None:
        key = object_key(service)
        self._services.pop(key, None)
        self._recompute(key)

    def upsert_slice(self, endpoint_slice: RawObject) -> None:
        key = object_key(endpoint_slice)
        previous = self._slices.get(key)
        old_owner = slice_service_key(previous) if previous is not None else None
        new_owner = slice_service_key(endpoint_slice)
        self._slices[key] = endpoint_slice
        if old_owner is not None and old_owner != new_owner:
            self._slices_by_service.get(old_owner, {}).pop(key, None)
            self._recompute(old_owner)
        if new_owner is not None:
            self._slices_by_service.setdefault(new_owner, {})[key] = endpoint_slice
            self._recompute(new_owner)

    def delete_slice(self, endpoint_slice: RawObject) -> None:
        key = object_key(endpoint_slice)
        previous = self._slices.pop(key, None)
        owner = slice_service_key(previous if previous is not None else endpoint_slice)
        if owner is not None:
            group = self._slices_by_service.get(owner, {})
            group.pop(key, None)
            if not group:
                self._slices_by_service.pop(owner, None)
            self._recompute(owner)

    def take_touched(self) -> Touched:
        touched = Touched(frozenset(self._touched_vs), frozenset(self._touched_addresses))
        self._touched_vs.clear()
        self._touched_addresses.clear()
        return touched

    def service_count(self) -> int:
        return len(self._services)

    # -------------------------------------------------------------- internals

    def _recompute(self, key: ObjectKey) -> None:
        service = self._services.get(key)
        new: dict[VirtualServer, Service] = {}
        if service is not None:
            slices = self._slices_by_service.get(key, {}).values()
            new = service_virtual_servers(service, slices, self.config)
        old = self._fragments.get(key, {})
        if new == old:
            return
        if new:
            self._fragments[key] = new
        else:
            self._fragments.pop(key, None)
        for vs in old.keys() - new.keys():
            claims = self._claims.get(vs, set())
            claims.discard(key)
            self._settle(vs, claims)
        for vs in new:
            claims = self._claims.setdefault(vs, set())
            claims.add(key)
            self._settle(vs, claims)
        old_addresses = {vs.address for vs in old}
        new_addresses = {vs.address for vs in new}
        for address in old_addresses - new_addresses:
            holders = self._address_claims.get(address, set())
            holders.discard(key)
            if not holders:
                self._address_claims.pop(address, None)
                self.state.addresses.discard(address)
                self._touched_addresses.add(address)
        for address in new_addresses - old_addresses:
            self._address_claims.setdefault(address, set()).add(key)
            if address not in self.state.addresses:
                self.state.addresses.add(address)
                self._touched_addresses.add(address)

    def _settle(self, vs: VirtualServer, claims: set[ObjectKey]) -> None:
        """Set the state of ``vs`` from its claimants (the first by key wins a clash)."""
        if claims:
            winner = min(claims)
            wanted: Service | None = self._fragments[winner][vs]
        else:
            self._claims.pop(vs, None)
            wanted = None
        current = self.state.services.get(vs)
        if wanted == current:
            return
        if wanted is None:
            del self.state.services[vs]
        else:
            self.state.services[vs] = wanted
        self._touched_vs.add(vs)
