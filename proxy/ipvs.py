"""The IPVS backend seam and its kernel implementation (the only pyroute2 importer).

:class:`IpvsBackend` is what the plan is applied to: IPVS services and destinations, and
the VIPs bound on the dummy interface ``kube-ipvs0``. :class:`KernelBackend` drives the
running kernel over netlink (IPVS generic netlink + rtnetlink) with pyroute2 0.9, whose
traps are avoided on purpose: its ``"update"`` command deletes (we use ``"set"``),
``IPVSDest`` defaults to direct routing (we always pass the forwarding method) and
``from_message`` is lossy (we read the raw attributes). Every failed netlink call raises
:class:`IpvsError` with the errno; nothing is reported done that was not.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pyroute2 import IPVS, IPRoute, IPVSDest, IPVSService
from pyroute2.netlink.exceptions import NetlinkError

from proxy.state import (
    DestinationSpec,
    Forwarding,
    IpvsState,
    RealServer,
    Service,
    ServiceSpec,
    VirtualServer,
)
from proxy.state import Protocol as L4Protocol

logger = logging.getLogger(__name__)

DUMMY_INTERFACE = "kube-ipvs0"

#: What a node needs for ClusterIP traffic through IPVS (kube-proxy sets the same).
SYSCTLS: dict[str, str] = {
    "net/ipv4/vs/conntrack": "1",
    "net/ipv4/ip_forward": "1",
    "net/ipv4/vs/expire_nodest_conn": "1",
    "net/ipv4/vs/expire_quiescent_template": "1",
}

PROTOCOL_NUMBERS: dict[str, int] = {
    "TCP": socket.IPPROTO_TCP,
    "UDP": socket.IPPROTO_UDP,
    "SCTP": 132,
}
PROTOCOL_NAMES: dict[int, L4Protocol] = {6: "TCP", 17: "UDP", 132: "SCTP"}

# IP_VS_CONN_F_* forwarding methods.
FORWARDING_METHODS: dict[str, int] = {"masq": 0, "local": 1, "tunnel": 2, "route": 3, "bypass": 4}
FORWARDING_NAMES: dict[int, Forwarding] = {
    0: "masq",
    1: "local",
    2: "tunnel",
    3: "route",
    4: "bypass",
}

SVC_F_PERSISTENT = 0x1
FLAGS_MASK = 0xFFFF


class IpvsError(Exception):
    """A netlink (or sysctl) operation failed; ``errno`` is the kernel's error number."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


class IpvsUnavailable(IpvsError):
    """This kernel has no IPVS (or we may not use it): the proxy cannot run here."""


@runtime_checkable
class IpvsBackend(Protocol):
    """IPVS services, destinations and the VIPs on kube-ipvs0. Every method raises
    :class:`IpvsError` when the operation did not happen."""

    def ensure_node_setup(self) -> None:
        """Create kube-ipvs0 if missing and set the sysctls ClusterIP traffic needs."""

    def read_state(self) -> IpvsState:
        """Every IPVS service with its destinations, and the addresses on kube-ipvs0."""

    def add_service(self, vs: VirtualServer, spec: ServiceSpec) -> None: ...

    def edit_service(self, vs: VirtualServer, spec: ServiceSpec) -> None: ...

    def delete_service(self, vs: VirtualServer) -> None: ...

    def add_destination(self, vs: VirtualServer, rs: RealServer, spec: DestinationSpec) -> None: ...

    def edit_destination(
        self, vs: VirtualServer, rs: RealServer, spec: DestinationSpec
    ) -> None: ...

    def delete_destination(self, vs: VirtualServer, rs: RealServer) -> None: ...

    def list_addresses(self) -> set[str]:
        """The addresses bound on kube-ipvs0."""

    def bind_address(self, address: str) -> None: ...

    def unbind_address(self, address: str) -> None: ...

    def close(self) -> None: ...


def _error(action: str, exc: NetlinkError) -> IpvsError:
    code = int(exc.code)
    return IpvsError(f"{action}: {os.strerror(code)} (errno {code})", code)


@contextmanager
def _netlink(action: str) -> Iterator[None]:
    try:
        yield
    except NetlinkError as exc:
        raise _error(action, exc) from None
    except OSError as exc:
        raise IpvsError(f"{action}: {exc}", exc.errno) from exc


def _host_length(address: str) -> int:
    return 128 if ":" in address else 32


class KernelBackend:
    """IPVS in the running kernel, over netlink."""

    def __init__(self, interface: str = DUMMY_INTERFACE, sysctl_root: Path = Path("/proc/sys")):
        self.interface = interface
        self._sysctl_root = sysctl_root
        try:
            self._ipvs = IPVS()
        except NetlinkError as exc:
            if exc.code == errno.ENOENT:
                raise IpvsUnavailable(
                    "this kernel has no IPVS (the generic netlink family 'IPVS' is missing): "
                    "load it with 'modprobe ip_vs' or run the proxy where the kernel has "
                    "IP_VS (tests: make test-kernel runs one in user-mode-linux)",
                    exc.code,
                ) from None
            raise _error("open IPVS netlink socket", exc) from None
        self._ipr = IPRoute()
        self._index: int | None = None

    # ---------------------------------------------------------------- node setup

    def ensure_node_setup(self) -> None:
        self._interface_index(create=True)
        for name, value in SYSCTLS.items():
            path = self._sysctl_root / name
            try:
                if path.read_text().strip() != value:
                    path.write_text(value)
                    logger.info("set sysctl %s=%s", name.replace("/", "."), value)
            except OSError as exc:
                raise IpvsError(
                    f"cannot set sysctl {name.replace('/', '.')}={value}: {exc} "
                    "(the proxy needs root and the ip_vs module)",
                    exc.errno,
                ) from exc

    def _interface_index(self, create: bool = False) -> int | None:
        if self._index is not None:
            return self._index
        with _netlink(f"look up {self.interface}"):
            found = self._ipr.link_lookup(ifname=self.interface)
        if not found and create:
            with _netlink(f"create dummy interface {self.interface}"):
                self._ipr.link("add", ifname=self.interface, kind="dummy")
                found = self._ipr.link_lookup(ifname=self.interface)
            logger.info("created dummy interface %s", self.interface)
        self._index = int(found[0]) if found else None
        return self._index

    def _require_index(self) -> int:
        index = self._interface_index(create=True)
        if index is None:
            raise IpvsError(f"interface {self.interface} could not be created")
        return index

    # ---------------------------------------------------------------- reading

    def read_state(self) -> IpvsState:
        state = IpvsState(addresses=self.list_addresses())
        with _netlink("dump IPVS services"):
            messages = self._ipvs.service("dump")
        for message in messages:
            attrs = dict(message.get("IPVS_CMD_ATTR_SERVICE")["attrs"])
            if attrs.get("IPVS_SVC_ATTR_FWMARK"):
                continue  # firewall-mark services have no address: never ours
            protocol = PROTOCOL_NAMES.get(int(attrs.get("IPVS_SVC_ATTR_PROTOCOL") or 0))
            if protocol is None:
                continue
            vs = VirtualServer(
                str(attrs["IPVS_SVC_ATTR_ADDR"]), int(attrs["IPVS_SVC_ATTR_PORT"]), protocol
            )
            flags = int((attrs.get("IPVS_SVC_ATTR_FLAGS") or {}).get("flags") or 0)
            timeout = int(attrs.get("IPVS_SVC_ATTR_TIMEOUT") or 0)
            spec = ServiceSpec(
                scheduler=str(attrs.get("IPVS_SVC_ATTR_SCHED_NAME") or ""),
                persistence_timeout=timeout if flags & SVC_F_PERSISTENT else 0,
            )
            state.services[vs] = Service(spec, self._read_destinations(vs))
        return state

    def _read_destinations(self, vs: VirtualServer) -> dict[RealServer, DestinationSpec]:
        with _netlink(f"dump destinations of {vs}"):
            messages = self._ipvs.dest("dump", service=self._key(vs))
        out: dict[RealServer, DestinationSpec] = {}
        for message in messages:
            attrs = dict(message.get("IPVS_CMD_ATTR_DEST")["attrs"])
            rs = RealServer(str(attrs["IPVS_DEST_ATTR_ADDR"]), int(attrs["IPVS_DEST_ATTR_PORT"]))
            method = int(attrs.get("IPVS_DEST_ATTR_FWD_METHOD") or 0) & 0x7
            out[rs] = DestinationSpec(
                weight=int(attrs.get("IPVS_DEST_ATTR_WEIGHT") or 0),
                forwarding=FORWARDING_NAMES.get(method, "masq"),
            )
        return out

    def list_addresses(self) -> set[str]:
        index = self._interface_index()
        if index is None:
            return set()
        with _netlink(f"list addresses of {self.interface}"):
            messages = self._ipr.addr("dump", index=index)
        return {str(m.get("IFA_ADDRESS")) for m in messages if m.get("IFA_ADDRESS")}

    # ---------------------------------------------------------------- services

    def _key(self, vs: VirtualServer) -> Any:
        return IPVSService(addr=vs.address, port=vs.port, protocol=PROTOCOL_NUMBERS[vs.protocol])

    def _service(self, vs: VirtualServer, spec: ServiceSpec) -> Any:
        fields: dict[str, Any] = {
            "addr": vs.address,
            "port": vs.port,
            "protocol": PROTOCOL_NUMBERS[vs.protocol],
            "sched_name": spec.scheduler,
            "timeout": spec.persistence_timeout,
            "flags": {
                "flags": SVC_F_PERSISTENT if spec.persistence_timeout else 0,
                "mask": FLAGS_MASK,
            },
        }
        if ":" in vs.address:
            # pyroute2 types the netmask as an IPv4 address; the kernel reads a u32
            # prefix length: these bytes (80 00 00 00) are 128 on a little-endian host.
            fields["netmask"] = "128.0.0.0"
        return IPVSService(**fields)

    def add_service(self, vs: VirtualServer, spec: ServiceSpec) -> None:
        with _netlink(f"add IPVS service {vs}"):
            self._ipvs.service("add", service=self._service(vs, spec))

    def edit_service(self, vs: VirtualServer, spec: ServiceSpec) -> None:
        # "set" is IPVS_CMD_SET_SERVICE (in place); pyroute2's "update" would delete it.
        with _netlink(f"edit IPVS service {vs}"):
            self._ipvs.service("set", service=self._service(vs, spec))

    def delete_service(self, vs: VirtualServer) -> None:
        with _netlink(f"delete IPVS service {vs}"):
            self._ipvs.service("del", service=self._key(vs))

    # ---------------------------------------------------------------- destinations

    def _dest(self, rs: RealServer, spec: DestinationSpec | None = None) -> Any:
        if spec is None:
            return IPVSDest(addr=rs.address, port=rs.port)
        return IPVSDest(
            addr=rs.address,
            port=rs.port,
            weight=spec.weight,
            fwd_method=FORWARDING_METHODS[spec.forwarding],
        )

    def add_destination(self, vs: VirtualServer, rs: RealServer, spec: DestinationSpec) -> None:
        with _netlink(f"add destination {rs} to {vs}"):
            self._ipvs.dest("add", service=self._key(vs), dest=self._dest(rs, spec))

    def edit_destination(self, vs: VirtualServer, rs: RealServer, spec: DestinationSpec) -> None:
        with _netlink(f"edit destination {rs} of {vs}"):
            self._ipvs.dest("set", service=self._key(vs), dest=self._dest(rs, spec))

    def delete_destination(self, vs: VirtualServer, rs: RealServer) -> None:
        with _netlink(f"delete destination {rs} from {vs}"):
            self._ipvs.dest("del", service=self._key(vs), dest=self._dest(rs))

    # ---------------------------------------------------------------- addresses

    def bind_address(self, address: str) -> None:
        index = self._require_index()
        with _netlink(f"bind {address} on {self.interface}"):
            self._ipr.addr("add", index=index, address=address, prefixlen=_host_length(address))

    def unbind_address(self, address: str) -> None:
        index = self._require_index()
        with _netlink(f"unbind {address} from {self.interface}"):
            self._ipr.addr("del", index=index, address=address, prefixlen=_host_length(address))

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        self._ipvs.close()
        self._ipr.close()

    def flush(self) -> None:
        """Delete every IPVS service (tests and cleanup only; the proxy never does)."""
        with _netlink("list IPVS services to flush"):
            messages = self._ipvs.service("dump")
        for message in messages:
            attrs = dict(message.get("IPVS_CMD_ATTR_SERVICE")["attrs"])
            key = IPVSService.from_message(message)
            with _netlink(f"delete IPVS service {attrs.get('IPVS_SVC_ATTR_ADDR')}"):
                self._ipvs.service("del", service=key)
