"""The IPVS state the proxy reasons about: virtual servers, real servers, bound VIPs.

Pure data, shared by desired (what Services and EndpointSlices ask for), the kernel
(what :meth:`IpvsBackend.read_state` reads back) and the plan between them. The same
operations (:mod:`proxy.plan`'s ``Op``) apply to a backend and, through
:func:`proxy.plan.record`, to an in-memory model of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Protocol = Literal["TCP", "UDP", "SCTP"]
Forwarding = Literal["masq", "local", "tunnel", "route", "bypass"]

PROTOCOLS: tuple[Protocol, ...] = ("TCP", "UDP", "SCTP")


class VirtualServer(NamedTuple):
    """An IPVS service's identity: ``address:port/protocol``.

    The small value types are named tuples: hashed, compared and sorted in C, which a
    full resync over 10,000 services does 10,000s of times."""

    address: str
    port: int
    protocol: Protocol = "TCP"

    def __str__(self) -> str:
        return f"{self.address}:{self.port}/{self.protocol}"


class ServiceSpec(NamedTuple):
    """What may be edited in place: scheduler and ClientIP persistence (0 = none)."""

    scheduler: str = "rr"
    persistence_timeout: int = 0

    def __str__(self) -> str:
        if self.persistence_timeout:
            return f"{self.scheduler} persistent {self.persistence_timeout}s"
        return self.scheduler


class RealServer(NamedTuple):
    """A destination's identity: ``address:port``."""

    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"


class DestinationSpec(NamedTuple):
    weight: int = 1
    forwarding: Forwarding = "masq"

    def __str__(self) -> str:
        return f"{self.forwarding} weight {self.weight}"


@dataclass(slots=True)
class Service:
    """One virtual server's configuration and its destinations."""

    spec: ServiceSpec
    destinations: dict[RealServer, DestinationSpec] = field(default_factory=dict)

    def copy(self) -> Service:
        return Service(self.spec, dict(self.destinations))


@dataclass(slots=True)
class IpvsState:
    """IPVS services with their destinations, and the addresses bound on kube-ipvs0.

    ``connections`` (read from the kernel, empty in a desired state) counts the active
    and inactive connections of each destination that has any: a TCP destination that
    is no longer wanted is drained (weight 0) until it has none, then deleted.
    """

    services: dict[VirtualServer, Service] = field(default_factory=dict)
    addresses: set[str] = field(default_factory=set)
    connections: dict[tuple[VirtualServer, RealServer], int] = field(default_factory=dict)

    def copy(self) -> IpvsState:
        return IpvsState(
            {vs: svc.copy() for vs, svc in self.services.items()},
            set(self.addresses),
            dict(self.connections),
        )

    def destination_count(self) -> int:
        return sum(len(svc.destinations) for svc in self.services.values())


@dataclass(frozen=True, slots=True)
class Touched:
    """The part of the state a change can affect: a plan restricted to it costs what
    the change costs, not what the whole state costs."""

    virtual_servers: frozenset[VirtualServer] = frozenset()
    addresses: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.virtual_servers or self.addresses)

    def __or__(self, other: Touched) -> Touched:
        return Touched(
            self.virtual_servers | other.virtual_servers, self.addresses | other.addresses
        )
