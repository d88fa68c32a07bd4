"""The IPVS backend seam and its kernel implementation (the only pyroute2 importer).

:class:`IpvsBackend` is what the plan is applied to: IPVS services and destinations, and
the VIPs bound on the dummy interface ``kube-ipvs0``. :class:`KernelBackend` drives the
running kernel over netlink: pyroute2 0.9 finds the IPVS generic netlink family (and
says when the kernel has none) and finds or creates kube-ipvs0; the messages on the hot
paths (IPVS services and destinations, the VIPs' addresses) are encoded here
(:class:`IpvsSocket`, :class:`AddressSocket`), which also sidesteps pyroute2's IPVS
traps (its ``"update"`` deletes, ``IPVSDest`` defaults to direct routing,
``from_message`` is lossy). Every failed netlink call raises :class:`IpvsError` with the
errno; nothing is reported done that was not.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pyroute2 import IPVS, IPRoute
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
    """Turn pyroute2's and the socket layer's errors into IpvsError, naming the action."""
    try:
        yield
    except NetlinkError as exc:
        raise _error(action, exc) from None
    except IpvsError as exc:
        raise IpvsError(f"{action}: {exc}", exc.errno) from None
    except OSError as exc:
        raise IpvsError(f"{action}: {exc}", exc.errno) from exc


def _host_length(address: str) -> int:
    return 128 if ":" in address else 32


# --------------------------------------------------------------------------- IPVS genetlink
#
# IPVS and address messages are encoded and decoded here, on plain netlink sockets:
# pyroute2's generic NLA decoding cost ~30 ms per service read back in user-mode-linux
# (stats and all), 20x what ipvsadm needs, and its per-call event loop made binding a
# VIP ~50 ms there; reading and writing only the attributes we use brings a full resync
# near ipvsadm's figures (docs/benchmarks.md).
# Layouts: include/uapi/linux/ip_vs.h, linux/if_addr.h.

NETLINK_ROUTE, NETLINK_GENERIC = 0, 16
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
IFA_ADDRESS, IFA_LOCAL = 1, 2
RT_SCOPE_UNIVERSE = 0
_IFADDRMSG = struct.Struct("=BBBBI")
NLMSG_ERROR, NLMSG_DONE = 2, 3
_NLMSG = struct.Struct("=IHHII")
_GENL = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")
_U16, _U32, _BE16 = struct.Struct("=H"), struct.Struct("=I"), struct.Struct(">H")
NLA_TYPE_MASK = 0x3FFF
GENL_VERSION = 1

CMD_NEW_SERVICE, CMD_SET_SERVICE, CMD_DEL_SERVICE, CMD_GET_SERVICE = 1, 2, 3, 4
CMD_NEW_DEST, CMD_SET_DEST, CMD_DEL_DEST, CMD_GET_DEST = 5, 6, 7, 8
CMD_FLUSH = 17
ATTR_SERVICE, ATTR_DEST = 1, 2
SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_FWMARK = 1, 2, 3, 4, 5
SVC_SCHED_NAME, SVC_FLAGS, SVC_TIMEOUT, SVC_NETMASK = 6, 7, 8, 9
DEST_ADDR, DEST_PORT, DEST_FWD_METHOD, DEST_WEIGHT = 1, 2, 3, 4
DEST_U_THRESH, DEST_L_THRESH, DEST_ACTIVE_CONNS, DEST_INACT_CONNS = 5, 6, 7, 8
DEST_ADDR_FAMILY = 11
FWD_MASK = 0x7


def _nla(kind: int, payload: bytes) -> bytes:
    length = _NLA.size + len(payload)
    return _NLA.pack(length, kind) + payload + b"\0" * (-length % 4)


def _parse_nlas(data: bytes, start: int = 0, end: int | None = None) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    end = len(data) if end is None else end
    offset = start
    while offset + _NLA.size <= end:
        length, kind = _NLA.unpack_from(data, offset)
        if length < _NLA.size:
            break
        out[kind & NLA_TYPE_MASK] = data[offset + _NLA.size : offset + length]
        offset += (length + 3) & ~3
    return out


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _packed_address(address: str) -> bytes:
    return socket.inet_pton(_family(address), address).ljust(16, b"\0")


def _unpacked_address(family: int, raw: bytes) -> str:
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return socket.inet_ntop(socket.AF_INET, raw[:4])


class NetlinkSocket:
    """A raw netlink socket: one request at a time, answers parsed, errors raised."""

    def __init__(self, protocol: int) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def request(self, kind: int, body: bytes, flags: int = 0, *, dump: bool = False) -> list[bytes]:
        """Send one message; return the body of each answer (a dump has many).

        Raises IpvsError with the kernel's errno when it refuses."""
        self._seq += 1
        seq = self._seq
        flags |= NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        self._sock.send(_NLMSG.pack(_NLMSG.size + len(body), kind, flags, seq, 0) + body)
        answers: list[bytes] = []
        while True:
            data = self._sock.recv(1 << 20)
            offset = 0
            while offset + _NLMSG.size <= len(data):
                length, msg_kind, _, msg_seq, _ = _NLMSG.unpack_from(data, offset)
                if length < _NLMSG.size:
                    raise IpvsError(f"malformed netlink answer (length {length})")
                end = offset + length
                if msg_seq == seq:
                    if msg_kind == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, offset + _NLMSG.size)
                        if code:
                            raise IpvsError(f"{os.strerror(-code)} (errno {-code})", -code)
                        return answers
                    if msg_kind == NLMSG_DONE:
                        return answers
                    answers.append(data[offset + _NLMSG.size : end])
                offset = (end + 3) & ~3


class AddressSocket:
    """Addresses of one interface over rtnetlink (RTM_NEWADDR / DELADDR / GETADDR)."""

    def __init__(self) -> None:
        self._netlink = NetlinkSocket(NETLINK_ROUTE)

    def close(self) -> None:
        self._netlink.close()

    @staticmethod
    def _message(index: int, address: str) -> bytes:
        family = _family(address)
        packed = socket.inet_pton(family, address)
        header = _IFADDRMSG.pack(family, _host_length(address), 0, RT_SCOPE_UNIVERSE, index)
        return header + _nla(IFA_LOCAL, packed) + _nla(IFA_ADDRESS, packed)

    def add(self, index: int, address: str) -> None:
        self._netlink.request(RTM_NEWADDR, self._message(index, address), NLM_F_CREATE | NLM_F_EXCL)

    def delete(self, index: int, address: str) -> None:
        self._netlink.request(RTM_DELADDR, self._message(index, address))

    def list(self, index: int) -> set[str]:
        out: set[str] = set()
        query = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        for answer in self._netlink.request(RTM_GETADDR, query, dump=True):
            family, _, _, _, answer_index = _IFADDRMSG.unpack_from(answer)
            if answer_index != index:
                continue
            attrs = _parse_nlas(answer, _IFADDRMSG.size)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw:
                out.add(_unpacked_address(family, raw))
        return out


class IpvsSocket:
    """Requests to the IPVS generic netlink family; one caller at a time."""

    def __init__(self, family_id: int) -> None:
        self.family_id = family_id
        self._netlink = NetlinkSocket(NETLINK_GENERIC)

    def close(self) -> None:
        self._netlink.close()

    def request(self, cmd: int, attrs: bytes, *, dump: bool = False) -> list[dict[int, bytes]]:
        """Send one command; return the top-level attributes of each answer (dumps)."""
        body = _GENL.pack(cmd, GENL_VERSION, 0) + attrs
        answers = self._netlink.request(self.family_id, body, dump=dump)
        return [_parse_nlas(answer, _GENL.size) for answer in answers]

    # ------------------------------------------------------------------ messages

    @staticmethod
    def service_key(vs: VirtualServer) -> bytes:
        return (
            _nla(SVC_AF, _U16.pack(_family(vs.address)))
            + _nla(SVC_PROTOCOL, _U16.pack(PROTOCOL_NUMBERS[vs.protocol]))
            + _nla(SVC_ADDR, _packed_address(vs.address))
            + _nla(SVC_PORT, _BE16.pack(vs.port))
        )

    @classmethod
    def service_entry(cls, vs: VirtualServer, spec: ServiceSpec) -> bytes:
        flags = SVC_F_PERSISTENT if spec.persistence_timeout else 0
        if _family(vs.address) == socket.AF_INET6:
            netmask = _U32.pack(128)  # a prefix length for IPv6
        else:
            netmask = b"\xff\xff\xff\xff"
        return _nla(
            ATTR_SERVICE,
            cls.service_key(vs)
            + _nla(SVC_SCHED_NAME, spec.scheduler.encode() + b"\0")
            + _nla(SVC_FLAGS, struct.pack("=II", flags, FLAGS_MASK))
            + _nla(SVC_TIMEOUT, _U32.pack(spec.persistence_timeout))
            + _nla(SVC_NETMASK, netmask),
        )

    @staticmethod
    def dest_key(rs: RealServer) -> bytes:
        return _nla(DEST_ADDR, _packed_address(rs.address)) + _nla(DEST_PORT, _BE16.pack(rs.port))

    @classmethod
    def dest_entry(cls, rs: RealServer, spec: DestinationSpec) -> bytes:
        return _nla(
            ATTR_DEST,
            cls.dest_key(rs)
            + _nla(DEST_ADDR_FAMILY, _U16.pack(_family(rs.address)))
            + _nla(DEST_FWD_METHOD, _U32.pack(FORWARDING_METHODS[spec.forwarding]))
            + _nla(DEST_WEIGHT, _U32.pack(spec.weight))
            + _nla(DEST_U_THRESH, _U32.pack(0))
            + _nla(DEST_L_THRESH, _U32.pack(0)),
        )

    def services(self) -> list[tuple[VirtualServer, ServiceSpec]]:
        out = []
        for answer in self.request(CMD_GET_SERVICE, b"", dump=True):
            attrs = _parse_nlas(answer[ATTR_SERVICE])
            if SVC_FWMARK in attrs and _U32.unpack(attrs[SVC_FWMARK][:4])[0]:
                continue  # firewall-mark services have no address: never ours
            protocol = PROTOCOL_NAMES.get(_U16.unpack(attrs[SVC_PROTOCOL][:2])[0])
            if protocol is None:
                continue
            family = _U16.unpack(attrs[SVC_AF][:2])[0]
            vs = VirtualServer(
                _unpacked_address(family, attrs[SVC_ADDR]),
                _BE16.unpack(attrs[SVC_PORT][:2])[0],
                protocol,
            )
            flags = _U32.unpack(attrs[SVC_FLAGS][:4])[0] if SVC_FLAGS in attrs else 0
            timeout = _U32.unpack(attrs[SVC_TIMEOUT][:4])[0] if SVC_TIMEOUT in attrs else 0
            scheduler = attrs.get(SVC_SCHED_NAME, b"").split(b"\0", 1)[0].decode()
            spec = ServiceSpec(scheduler, timeout if flags & SVC_F_PERSISTENT else 0)
            out.append((vs, spec))
        return out

    def destinations(
        self, vs: VirtualServer, connections: dict[tuple[VirtualServer, RealServer], int]
    ) -> dict[RealServer, DestinationSpec]:
        """The destinations of ``vs``; their open connections are added to ``connections``."""
        out: dict[RealServer, DestinationSpec] = {}
        key = _nla(ATTR_SERVICE, self.service_key(vs))
        default_family = _family(vs.address)
        for answer in self.request(CMD_GET_DEST, key, dump=True):
            attrs = _parse_nlas(answer[ATTR_DEST])
            family = default_family
            if DEST_ADDR_FAMILY in attrs:
                family = _U16.unpack(attrs[DEST_ADDR_FAMILY][:2])[0]
            rs = RealServer(
                _unpacked_address(family, attrs[DEST_ADDR]), _BE16.unpack(attrs[DEST_PORT][:2])[0]
            )
            method = _U32.unpack(attrs[DEST_FWD_METHOD][:4])[0] & FWD_MASK
            out[rs] = DestinationSpec(
                weight=_U32.unpack(attrs[DEST_WEIGHT][:4])[0],
                forwarding=FORWARDING_NAMES.get(method, "masq"),
            )
            count = sum(
                _U32.unpack(attrs[kind][:4])[0]
                for kind in (DEST_ACTIVE_CONNS, DEST_INACT_CONNS)
                if kind in attrs
            )
            if count:
                connections[vs, rs] = count
        return out


# --------------------------------------------------------------------------- the kernel


def _open_ipvs() -> Any:
    """pyroute2's IPVS socket; when the family is missing, load ip_vs once and retry
    (kube-proxy loads its modules too; without modprobe or the module, the first error
    stands)."""
    try:
        return IPVS()
    except NetlinkError as exc:
        if exc.code != errno.ENOENT:
            raise
        try:
            loaded = subprocess.run(["modprobe", "-q", "ip_vs"], capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            raise exc from None
        if loaded.returncode != 0:
            raise exc from None
        logger.info("loaded the ip_vs kernel module")
        return IPVS()


class KernelBackend:
    """IPVS in the running kernel, over netlink."""

    def __init__(self, interface: str = DUMMY_INTERFACE, sysctl_root: Path = Path("/proc/sys")):
        self.interface = interface
        self._sysctl_root = sysctl_root
        try:
            probe = _open_ipvs()
        except NetlinkError as exc:
            if exc.code == errno.ENOENT:
                raise IpvsUnavailable(
                    "this kernel has no IPVS (the generic netlink family 'IPVS' is missing): "
                    "load it with 'modprobe ip_vs' or run the proxy where the kernel has "
                    "IP_VS (tests: make test-kernel runs one in user-mode-linux)",
                    exc.code,
                ) from None
            raise _error("open IPVS netlink socket", exc) from None
        try:
            family_id = int(probe.prid)
        finally:
            probe.close()
        self._ipvs = IpvsSocket(family_id)
        self._addresses = AddressSocket()
        self._ipr = IPRoute()
        self._index: int | None = None

    # ---------------------------------------------------------------- node setup

    def ensure_node_setup(self) -> None:
        self._index = None  # someone may have deleted the interface by hand
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
            services = self._ipvs.services()
        for vs, spec in services:
            with _netlink(f"dump destinations of {vs}"):
                state.services[vs] = Service(spec, self._ipvs.destinations(vs, state.connections))
        return state

    def list_addresses(self) -> set[str]:
        index = self._interface_index()
        if index is None:
            return set()
        with _netlink(f"list addresses of {self.interface}"):
            return self._addresses.list(index)

    # ---------------------------------------------------------------- services

    def add_service(self, vs: VirtualServer, spec: ServiceSpec) -> None:
        with _netlink(f"add IPVS service {vs}"):
            self._ipvs.request(CMD_NEW_SERVICE, IpvsSocket.service_entry(vs, spec))

    def edit_service(self, vs: VirtualServer, spec: ServiceSpec) -> None:
        # IPVS_CMD_SET_SERVICE edits in place: the VIP keeps working meanwhile.
        with _netlink(f"edit IPVS service {vs}"):
            self._ipvs.request(CMD_SET_SERVICE, IpvsSocket.service_entry(vs, spec))

    def delete_service(self, vs: VirtualServer) -> None:
        with _netlink(f"delete IPVS service {vs}"):
            self._ipvs.request(CMD_DEL_SERVICE, _nla(ATTR_SERVICE, IpvsSocket.service_key(vs)))

    # ---------------------------------------------------------------- destinations

    def add_destination(self, vs: VirtualServer, rs: RealServer, spec: DestinationSpec) -> None:
        with _netlink(f"add destination {rs} to {vs}"):
            self._ipvs.request(
                CMD_NEW_DEST,
                _nla(ATTR_SERVICE, IpvsSocket.service_key(vs)) + IpvsSocket.dest_entry(rs, spec),
            )

    def edit_destination(self, vs: VirtualServer, rs: RealServer, spec: DestinationSpec) -> None:
        with _netlink(f"edit destination {rs} of {vs}"):
            self._ipvs.request(
                CMD_SET_DEST,
                _nla(ATTR_SERVICE, IpvsSocket.service_key(vs)) + IpvsSocket.dest_entry(rs, spec),
            )

    def delete_destination(self, vs: VirtualServer, rs: RealServer) -> None:
        with _netlink(f"delete destination {rs} from {vs}"):
            self._ipvs.request(
                CMD_DEL_DEST,
                _nla(ATTR_SERVICE, IpvsSocket.service_key(vs))
                + _nla(ATTR_DEST, IpvsSocket.dest_key(rs)),
            )

    # ---------------------------------------------------------------- addresses

    def bind_address(self, address: str) -> None:
        index = self._require_index()
        with _netlink(f"bind {address} on {self.interface}"):
            self._addresses.add(index, address)

    def unbind_address(self, address: str) -> None:
        index = self._require_index()
        with _netlink(f"unbind {address} from {self.interface}"):
            self._addresses.delete(index, address)

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        self._ipvs.close()
        self._addresses.close()
        self._ipr.close()

    def remove_interface_if_empty(self) -> bool:
        """Delete kube-ipvs0 when no address is left on it (``minik8s proxy --cleanup``)."""
        index = self._interface_index()
        if index is None or self.list_addresses():
            return False
        with _netlink(f"delete interface {self.interface}"):
            self._ipr.link("del", index=index)
        self._index = None
        logger.info("deleted interface %s", self.interface)
        return True

    def flush(self) -> None:
        """Delete every IPVS service (tests and cleanup only; the proxy never does)."""
        with _netlink("flush IPVS"):
            self._ipvs.request(CMD_FLUSH, b"")
