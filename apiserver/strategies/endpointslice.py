"""discovery.k8s.io/v1 EndpointSlice: addressType, endpoints and ports as upstream checks them."""

from __future__ import annotations

from apiserver.strategies.access import dicts, dig, text
from apiserver.strategy import GenericStrategy, RawObject
from apiserver.tables import AGE_COLUMN, NAME_COLUMN, Column, list_with_more
from apiserver.validation import (
    IMMUTABLE,
    Cause,
    child,
    duplicate,
    index,
    invalid,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_valid_port_num,
    one_of,
    parse_ip,
    required,
    too_many,
)
from minik8s.models import EndpointSlice

ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")
PROTOCOLS = ("SCTP", "TCP", "UDP")
MAX_ADDRESSES = 100
MAX_ENDPOINTS = 1000
MAX_PORTS = 100


def _address_errors(address: str, address_type: str) -> list[str]:
    if address_type == "FQDN":
        return is_dns1123_subdomain(address)
    ip = parse_ip(address)
    if address_type == "IPv4" and (ip is None or ip.version != 4):
        return ["must be a valid IPv4 address"]
    if address_type == "IPv6" and (ip is None or ip.version != 6):
        return ["must be a valid IPv6 address"]
    return []


class EndpointSliceStrategy(GenericStrategy):
    model = EndpointSlice

    def __init__(self) -> None:
        super().__init__(namespaced=True, has_status=False)

    def default(self, obj: RawObject) -> None:
        for _, port in dicts(obj.get("ports")):
            port.setdefault("name", "")
            port.setdefault("protocol", "TCP")

    def validate_kind(self, obj: RawObject) -> list[Cause]:
        causes: list[Cause] = []
        address_type = obj.get("addressType")
        if not address_type:
            causes.append(required("addressType"))
        else:
            causes += one_of("addressType", address_type, ADDRESS_TYPES)
        endpoints = dicts(obj.get("endpoints"))
        if len(endpoints) > MAX_ENDPOINTS:
            causes.append(too_many("endpoints", len(endpoints), MAX_ENDPOINTS))
        for i, endpoint in endpoints:
            path = index("endpoints", i)
            addresses = endpoint.get("addresses")
            if not isinstance(addresses, list) or not addresses:
                causes.append(required(child(path, "addresses"), "must contain at least 1 address"))
                addresses = []
            elif len(addresses) > MAX_ADDRESSES:
                causes.append(too_many(child(path, "addresses"), len(addresses), MAX_ADDRESSES))
            for j, address in enumerate(addresses):
                if isinstance(address, str) and isinstance(address_type, str):
                    address_path = index(child(path, "addresses"), j)
                    causes += [
                        invalid(address_path, address, m)
                        for m in _address_errors(address, address_type)
                    ]
            node_name = endpoint.get("nodeName")
            if isinstance(node_name, str) and node_name:
                causes += [
                    invalid(child(path, "nodeName"), node_name, m)
                    for m in is_dns1123_subdomain(node_name)
                ]
            hostname = endpoint.get("hostname")
            if isinstance(hostname, str) and hostname:
                causes += [
                    invalid(child(path, "hostname"), hostname, m)
                    for m in is_dns1123_label(hostname)
                ]
        ports = dicts(obj.get("ports"))
        if len(ports) > MAX_PORTS:
            causes.append(too_many("ports", len(ports), MAX_PORTS))
        names: set[str] = set()
        for i, port in ports:
            path = index("ports", i)
            name = port.get("name")
            if isinstance(name, str):
                if name:
                    causes += [
                        invalid(child(path, "name"), name, m) for m in is_dns1123_label(name)
                    ]
                if name in names:
                    causes.append(duplicate(child(path, "name"), name))
                names.add(name)
            number = port.get("port")
            if isinstance(number, int):
                causes += [
                    invalid(child(path, "port"), number, m) for m in is_valid_port_num(number)
                ]
            causes += one_of(child(path, "protocol"), port.get("protocol"), PROTOCOLS)
        return causes

    def validate_kind_update(self, new: RawObject, old: RawObject) -> list[Cause]:
        if new.get("addressType") != old.get("addressType"):
            return [invalid("addressType", new.get("addressType"), IMMUTABLE)]
        return []

    columns = (
        NAME_COLUMN,
        Column(
            "AddressType",
            lambda obj, now: text(obj.get("addressType")),
            description="The IP protocol for this slice",
        ),
        Column(
            "Ports",
            lambda obj, now: format_ports(obj),
            description="The ports exposed by this slice",
        ),
        Column(
            "Endpoints",
            lambda obj, now: format_slice_endpoints(obj),
            description="The endpoint addresses in this slice",
        ),
        AGE_COLUMN,
    )


def format_ports(obj: RawObject, limit: int = 3) -> str:
    """kubectl's formatDiscoveryPorts: ``8080,9100``; ``<unset>`` when there are none."""
    found: list[str] = []
    more = False
    count = 0
    for _, port in dicts(obj.get("ports")):
        if len(found) < limit:
            number = port.get("port")
            if number is not None:
                found.append(str(number))
            elif port.get("name") is not None:
                found.append(text(port.get("name")))
            else:
                found.append("*")
        elif len(found) == limit:
            more = True
        count += 1
    return list_with_more(found, more, count, limit, "<unset>")


def format_slice_endpoints(obj: RawObject, limit: int = 3) -> str:
    """kubectl's formatDiscoveryEndpoints: the first addresses, then ``+ N more...``."""
    found: list[str] = []
    more = False
    count = 0
    for _, endpoint in dicts(obj.get("endpoints")):
        for address in dig(endpoint, "addresses") or []:
            if len(found) < limit:
                found.append(str(address))
            elif len(found) == limit:
                more = True
            count += 1
    return list_with_more(found, more, count, limit, "<unset>")
