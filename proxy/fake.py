"""An in-memory IpvsBackend that fails where the kernel fails (same errnos).

Kept honest by the conformance suite (tests/conformance/test_ipvs_backend.py), which
runs the same checks on it and on the kernel in user-mode-linux.
"""

from __future__ import annotations

import errno
import os

from proxy.ipvs import IpvsError
from proxy.state import (
    DestinationSpec,
    IpvsState,
    RealServer,
    Service,
    ServiceSpec,
    VirtualServer,
)

# The schedulers a stock kernel ships as modules.
SCHEDULERS = frozenset(
    {"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}
)
SCHEDULER_NAME_MAX = 16  # IP_VS_SCHEDNAME_MAXLEN, with its NUL: longer names are EINVAL


def _fail(action: str, code: int) -> IpvsError:
    return IpvsError(f"{action}: {os.strerror(code)} (errno {code})", code)


class FakeBackend:
    """IPVS and kube-ipvs0 as plain data; ``calls`` counts the writes performed.

    Tests open "connections" by setting ``state.connections[(vs, rs)]``."""

    def __init__(self, state: IpvsState | None = None) -> None:
        self.state = state.copy() if state is not None else IpvsState()
        self.interface_exists = False
        self.sysctls: dict[str, str] = {}
        self.calls = 0

    def ensure_node_setup(self) -> None:
        self.interface_exists = True
        self.sysctls.update(
            {"net.ipv4.vs.conntrack": "1", "net.ipv4.ip_forward": "1"},
        )

    def read_state(self) -> IpvsState:
        return self.state.copy()

    # ---------------------------------------------------------------- services

    def add_service(self, vs: VirtualServer, spec: ServiceSpec) -> None:
        action = f"add IPVS service {vs}"
        if len(spec.scheduler) >= SCHEDULER_NAME_MAX:
            raise _fail(action, errno.EINVAL)
        if spec.scheduler not in SCHEDULERS:
            raise _fail(action, errno.ENOENT)
        if vs in self.state.services:
            raise _fail(action, errno.EEXIST)
        self.calls += 1
        self.state.services[vs] = Service(spec)

    def edit_service(self, vs: VirtualServer, spec: ServiceSpec) -> None:
        action = f"edit IPVS service {vs}"
        service = self.state.services.get(vs)
        if service is None:
            raise _fail(action, errno.ESRCH)
        if len(spec.scheduler) >= SCHEDULER_NAME_MAX:
            raise _fail(action, errno.EINVAL)
        if spec.scheduler not in SCHEDULERS:
            raise _fail(action, errno.ENOENT)
        self.calls += 1
        service.spec = spec

    def delete_service(self, vs: VirtualServer) -> None:
        if vs not in self.state.services:
            raise _fail(f"delete IPVS service {vs}", errno.ESRCH)
        self.calls += 1
        for rs in self.state.services.pop(vs).destinations:
            self.state.connections.pop((vs, rs), None)

    # ---------------------------------------------------------------- destinations

    def _service(self, action: str, vs: VirtualServer) -> Service:
        service = self.state.services.get(vs)
        if service is None:
            raise _fail(action, errno.ESRCH)
        return service

    def add_destination(self, vs: VirtualServer, rs: RealServer, spec: DestinationSpec) -> None:
        action = f"add destination {rs} to {vs}"
        service = self._service(action, vs)
        if rs in service.destinations:
            raise _fail(action, errno.EEXIST)
        self.calls += 1
        service.destinations[rs] = spec

    def edit_destination(self, vs: VirtualServer, rs: RealServer, spec: DestinationSpec) -> None:
        action = f"edit destination {rs} of {vs}"
        service = self._service(action, vs)
        if rs not in service.destinations:
            raise _fail(action, errno.ENOENT)
        self.calls += 1
        service.destinations[rs] = spec

    def delete_destination(self, vs: VirtualServer, rs: RealServer) -> None:
        action = f"delete destination {rs} from {vs}"
        service = self._service(action, vs)
        if rs not in service.destinations:
            raise _fail(action, errno.ENOENT)
        self.calls += 1
        del service.destinations[rs]
        self.state.connections.pop((vs, rs), None)

    # ---------------------------------------------------------------- addresses

    def list_addresses(self) -> set[str]:
        return set(self.state.addresses)

    def bind_address(self, address: str) -> None:
        self.interface_exists = True
        if address in self.state.addresses:
            raise _fail(f"bind {address}", errno.EEXIST)
        self.calls += 1
        self.state.addresses.add(address)

    def unbind_address(self, address: str) -> None:
        if address not in self.state.addresses:
            raise _fail(f"unbind {address}", errno.EADDRNOTAVAIL)
        self.calls += 1
        self.state.addresses.discard(address)

    def close(self) -> None:
        pass

    def flush(self) -> None:
        self.state.services.clear()
        self.state.connections.clear()
