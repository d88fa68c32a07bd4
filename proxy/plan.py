"""The plan from the actual IPVS state to the desired one (pure), and its thin apply.

``plan(desired, actual, owns)`` lists the operations, in an order that keeps traffic
flowing: services are added or edited in place (never deleted and re-added), their
destinations reconciled, the VIP bound; then what is no longer wanted is deleted and
unbound. Only what ``owns(address)`` accepts is touched, so foreign IPVS services and
addresses survive. Invariant (tested): after applying a plan, the next plan is empty.

``apply(ops, backend)`` is the only place that performs them; ``record(state, ops)`` plays
the same operations on an in-memory model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.state import (
    DestinationSpec,
    IpvsState,
    RealServer,
    Service,
    ServiceSpec,
    Touched,
    VirtualServer,
)

if TYPE_CHECKING:
    from proxy.ipvs import IpvsBackend


@dataclass(frozen=True, slots=True)
class AddService:
    vs: VirtualServer
    spec: ServiceSpec

    def __str__(self) -> str:
        return f"add service {self.vs} ({self.spec})"


@dataclass(frozen=True, slots=True)
class EditService:
    vs: VirtualServer
    spec: ServiceSpec

    def __str__(self) -> str:
        return f"edit service {self.vs} ({self.spec})"


@dataclass(frozen=True, slots=True)
class DeleteService:
    vs: VirtualServer

    def __str__(self) -> str:
        return f"delete service {self.vs}"


@dataclass(frozen=True, slots=True)
class AddDestination:
    vs: VirtualServer
    rs: RealServer
    spec: DestinationSpec

    def __str__(self) -> str:
        return f"add destination {self.rs} to {self.vs} ({self.spec})"


@dataclass(frozen=True, slots=True)
class EditDestination:
    vs: VirtualServer
    rs: RealServer
    spec: DestinationSpec

    def __str__(self) -> str:
        return f"edit destination {self.rs} of {self.vs} ({self.spec})"


@dataclass(frozen=True, slots=True)
class DeleteDestination:
    vs: VirtualServer
    rs: RealServer

    def __str__(self) -> str:
        return f"delete destination {self.rs} from {self.vs}"


@dataclass(frozen=True, slots=True)
class BindAddress:
    address: str

    def __str__(self) -> str:
        return f"bind {self.address}/32 on kube-ipvs0"


@dataclass(frozen=True, slots=True)
class UnbindAddress:
    address: str

    def __str__(self) -> str:
        return f"unbind {self.address} from kube-ipvs0"


Op = (
    AddService
    | EditService
    | DeleteService
    | AddDestination
    | EditDestination
    | DeleteDestination
    | BindAddress
    | UnbindAddress
)


def plan(
    desired: IpvsState,
    actual: IpvsState,
    owns: Callable[[str], bool],
    touched: Touched | None = None,
) -> list[Op]:
    """The operations that turn ``actual`` into ``desired`` for every address ``owns``.

    With ``touched``, only those virtual servers and addresses are compared: the cost
    follows the change. Without it, everything in either state is.
    """
    if touched is None:
        virtual_servers: Iterable[VirtualServer] = desired.services.keys() | actual.services.keys()
        addresses: Iterable[str] = desired.addresses | actual.addresses
    else:
        virtual_servers = touched.virtual_servers
        addresses = touched.addresses

    upserts: list[Op] = []
    destination_ops: list[tuple[VirtualServer, list[Op]]] = []
    deletes: list[Op] = []
    for vs in virtual_servers:
        want = desired.services.get(vs)
        have = actual.services.get(vs)
        if want == have or not owns(vs.address):
            continue  # the common case of a full resync: nothing to do, nothing to check
        if want is None:
            deletes.append(DeleteService(vs))
            continue
        if have is None:
            upserts.append(AddService(vs, want.spec))
            have = Service(want.spec)
        elif have.spec != want.spec:
            upserts.append(EditService(vs, want.spec))
        if want.destinations != have.destinations:
            ops = _destination_ops(vs, want, have, actual.connections)
            if ops:
                destination_ops.append((vs, ops))

    binds: list[Op] = []
    unbinds: list[Op] = []
    for address in addresses:
        wanted = address in desired.addresses
        if wanted == (address in actual.addresses) or not owns(address):
            continue
        if wanted:
            binds.append(BindAddress(address))
        else:
            unbinds.append(UnbindAddress(address))
    # Sorted, so that a plan is deterministic (and readable in --dry-run).
    upserts.sort(key=_vs_of)
    destination_ops.sort(key=lambda pair: pair[0])
    deletes.sort(key=_vs_of)
    binds.sort(key=_address_of)
    unbinds.sort(key=_address_of)
    flat = [op for _, ops in destination_ops for op in ops]
    return upserts + flat + binds + deletes + unbinds


def _vs_of(op: Op) -> VirtualServer:
    return op.vs  # type: ignore[union-attr]


def _address_of(op: Op) -> str:
    return op.address  # type: ignore[union-attr]


def _destination_ops(
    vs: VirtualServer,
    want: Service,
    have: Service,
    connections: Mapping[tuple[VirtualServer, RealServer], int],
) -> list[Op]:
    ops: list[Op] = []
    for rs in sorted(have.destinations.keys() - want.destinations.keys()):
        if vs.protocol == "TCP" and connections.get((vs, rs), 0) > 0:
            # Graceful termination (as kube-proxy): no new connections, the open ones
            # finish; deleted by the first plan that sees it without connections.
            draining = have.destinations[rs]
            if draining.weight != 0:
                ops.append(EditDestination(vs, rs, draining._replace(weight=0)))
            continue
        ops.append(DeleteDestination(vs, rs))
    for rs, spec in sorted(want.destinations.items()):
        current = have.destinations.get(rs)
        if current is None:
            ops.append(AddDestination(vs, rs, spec))
        elif current != spec:
            ops.append(EditDestination(vs, rs, spec))
    return ops


class ApplyError(Exception):
    """Some operations failed; the others were applied. ``failed`` pairs each failed
    operation with its error, ``applied`` lists those that succeeded."""

    def __init__(self, applied: list[Op], failed: list[tuple[Op, Exception]]) -> None:
        self.applied = applied
        self.failed = failed
        first_op, first_error = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        super().__init__(f"{first_op} failed: {first_error}{more}")


def apply(ops: Iterable[Op], backend: IpvsBackend) -> list[Op]:
    """Perform ``ops`` on ``backend`` in order; return the applied ones.

    A failed operation does not stop the others; :class:`ApplyError` is raised at the
    end listing every failure (a destination of a service that could not be created
    fails on its own, with the kernel's "no such process").
    """
    applied: list[Op] = []
    failed: list[tuple[Op, Exception]] = []
    for op in ops:
        try:
            _perform(op, backend)
        except Exception as exc:  # recorded per operation, raised below as ApplyError
            failed.append((op, exc))
        else:
            applied.append(op)
    if failed:
        raise ApplyError(applied, failed)
    return applied


def _perform(op: Op, backend: IpvsBackend) -> None:
    match op:
        case AddService(vs, spec):
            backend.add_service(vs, spec)
        case EditService(vs, spec):
            backend.edit_service(vs, spec)
        case DeleteService(vs):
            backend.delete_service(vs)
        case AddDestination(vs, rs, spec):
            backend.add_destination(vs, rs, spec)
        case EditDestination(vs, rs, spec):
            backend.edit_destination(vs, rs, spec)
        case DeleteDestination(vs, rs):
            backend.delete_destination(vs, rs)
        case BindAddress(address):
            backend.bind_address(address)
        case UnbindAddress(address):
            backend.unbind_address(address)


def record(state: IpvsState, ops: Iterable[Op]) -> IpvsState:
    """Play ``ops`` on an in-memory state (mutated and returned), leniently."""
    for op in ops:
        match op:
            case AddService(vs, spec) | EditService(vs, spec):
                service = state.services.get(vs)
                if service is None:
                    state.services[vs] = Service(spec)
                else:
                    service.spec = spec
            case DeleteService(vs):
                service = state.services.pop(vs, None)
                if service is not None:
                    for rs in service.destinations:
                        state.connections.pop((vs, rs), None)
            case AddDestination(vs, rs, spec) | EditDestination(vs, rs, spec):
                state.services.setdefault(vs, Service(ServiceSpec())).destinations[rs] = spec
            case DeleteDestination(vs, rs):
                service = state.services.get(vs)
                if service is not None:
                    service.destinations.pop(rs, None)
                state.connections.pop((vs, rs), None)
            case BindAddress(address):
                state.addresses.add(address)
            case UnbindAddress(address):
                state.addresses.discard(address)
    return state
