"""The IPVS / rtnetlink message encoding of proxy/ipvs.py, checked byte for byte."""

from __future__ import annotations

import socket
import struct

from proxy import ipvs
from proxy.state import DestinationSpec, RealServer, ServiceSpec, VirtualServer


def test_attributes_are_padded_to_four_bytes_and_parse_back() -> None:
    encoded = ipvs._nla(6, b"rr\0") + ipvs._nla(4, struct.pack(">H", 80))
    assert len(encoded) == 8 + 8  # 4 + 3 padded to 8; 4 + 2 padded to 8
    assert ipvs._parse_nlas(encoded) == {6: b"rr\0", 4: b"\x00P"}


def test_a_service_entry_carries_every_attribute_the_kernel_requires() -> None:
    vs = VirtualServer("10.96.0.10", 80, "TCP")
    (entry,) = ipvs._parse_nlas(ipvs.IpvsSocket.service_entry(vs, ServiceSpec("rr", 60))).items()
    kind, payload = entry
    assert kind == ipvs.ATTR_SERVICE
    attrs = ipvs._parse_nlas(payload)
    assert struct.unpack("=H", attrs[ipvs.SVC_AF])[0] == socket.AF_INET
    assert struct.unpack("=H", attrs[ipvs.SVC_PROTOCOL])[0] == socket.IPPROTO_TCP
    assert attrs[ipvs.SVC_ADDR] == socket.inet_aton("10.96.0.10") + bytes(12)
    assert attrs[ipvs.SVC_PORT] == struct.pack(">H", 80)  # network order
    assert attrs[ipvs.SVC_SCHED_NAME] == b"rr\0"
    assert struct.unpack("=II", attrs[ipvs.SVC_FLAGS]) == (ipvs.SVC_F_PERSISTENT, 0xFFFF)
    assert struct.unpack("=I", attrs[ipvs.SVC_TIMEOUT])[0] == 60
    assert attrs[ipvs.SVC_NETMASK] == b"\xff\xff\xff\xff"


def test_an_ipv6_service_has_a_prefix_length_as_netmask() -> None:
    vs = VirtualServer("fd00::10", 53, "UDP")
    payload = ipvs._parse_nlas(ipvs.IpvsSocket.service_entry(vs, ServiceSpec()))[ipvs.ATTR_SERVICE]
    attrs = ipvs._parse_nlas(payload)
    assert struct.unpack("=H", attrs[ipvs.SVC_AF])[0] == socket.AF_INET6
    assert struct.unpack("=I", attrs[ipvs.SVC_NETMASK])[0] == 128
    assert struct.unpack("=II", attrs[ipvs.SVC_FLAGS])[0] == 0


def test_a_destination_is_nat_unless_told_otherwise() -> None:
    rs = RealServer("10.2.16.5", 12345)
    payload = ipvs._parse_nlas(ipvs.IpvsSocket.dest_entry(rs, DestinationSpec()))[ipvs.ATTR_DEST]
    attrs = ipvs._parse_nlas(payload)
    assert struct.unpack("=I", attrs[ipvs.DEST_FWD_METHOD])[0] == 0  # IP_VS_CONN_F_MASQ
    assert struct.unpack("=I", attrs[ipvs.DEST_WEIGHT])[0] == 1
    assert attrs[ipvs.DEST_PORT] == struct.pack(">H", 12345)
    for required in (ipvs.DEST_U_THRESH, ipvs.DEST_L_THRESH):
        assert required in attrs


def test_an_address_message_is_a_host_route_on_the_interface() -> None:
    message = ipvs.AddressSocket._message(7, "10.96.0.10")
    family, prefix, _, scope, index = ipvs._IFADDRMSG.unpack_from(message)
    assert (family, prefix, scope, index) == (socket.AF_INET, 32, 0, 7)
    attrs = ipvs._parse_nlas(message, ipvs._IFADDRMSG.size)
    assert attrs[ipvs.IFA_LOCAL] == attrs[ipvs.IFA_ADDRESS] == socket.inet_aton("10.96.0.10")
