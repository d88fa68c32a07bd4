"""v1 Endpoints: addresses must be IPs, ports valid; the ENDPOINTS column."""

from __future__ import annotations

from apiserver.strategies.access import dicts, text
from apiserver.strategy import GenericStrategy, RawObject
from apiserver.tables import AGE_COLUMN, NAME_COLUMN, Column
from apiserver.validation import (
    Cause,
    child,
    index,
    invalid,
    is_dns1123_label,
    is_valid_port_num,
    one_of,
    required,
    validate_ip,
)
from minik8s.models import Endpoints

PROTOCOLS = ("SCTP", "TCP", "UDP")


class EndpointsStrategy(GenericStrategy):
    model = Endpoints

    def __init__(self) -> None:
        super().__init__(namespaced=True, has_status=False)

    def default(self, obj: RawObject) -> None:
        for _, subset in dicts(obj.get("subsets")):
            for _, port in dicts(subset.get("ports")):
                port.setdefault("protocol", "TCP")

    def validate_kind(self, obj: RawObject) -> list[Cause]:
        causes: list[Cause] = []
        for i, subset in dicts(obj.get("subsets")):
            path = index("subsets", i)
            for field in ("addresses", "notReadyAddresses"):
                for j, address in dicts(subset.get(field)):
                    ip = address.get("ip")
                    ip_path = child(index(child(path, field), j), "ip")
                    if not ip:
                        causes.append(required(ip_path))
                    elif isinstance(ip, str):
                        causes += validate_ip(ip_path, ip)
            ports = dicts(subset.get("ports"))
            for j, port in ports:
                port_path = index(child(path, "ports"), j)
                name = port.get("name")
                if isinstance(name, str) and name:
                    causes += [
                        invalid(child(port_path, "name"), name, m) for m in is_dns1123_label(name)
                    ]
                elif len(ports) > 1:
                    causes.append(required(child(port_path, "name")))
                number = port.get("port")
                if isinstance(number, int):
                    causes += [
                        invalid(child(port_path, "port"), number, m)
                        for m in is_valid_port_num(number)
                    ]
                causes += one_of(child(port_path, "protocol"), port.get("protocol"), PROTOCOLS)
        return causes

    columns = (
        NAME_COLUMN,
        Column(
            "Endpoints",
            lambda obj, now: format_endpoints(obj),
            description="Endpoints of the service",
        ),
        AGE_COLUMN,
    )


def format_endpoints(obj: RawObject, limit: int = 3) -> str:
    """kubectl's formatEndpoints: ``10.0.0.5:8080,10.0.0.6:8080 + 2 more...``."""
    found: list[str] = []
    more = False
    count = 0
    for _, subset in dicts(obj.get("subsets")):
        addresses = [text(a.get("ip")) for _, a in dicts(subset.get("addresses"))]
        ports = dicts(subset.get("ports"))
        if not ports:
            count += len(addresses)
            for ip in addresses:
                if len(found) == limit:
                    more = True
                    break
                found.append(ip)
            continue
        for _, port in ports:
            count += len(addresses)
            for ip in addresses:
                if len(found) == limit:
                    more = True
                    break
                host = f"[{ip}]" if ":" in ip else ip
                found.append(f"{host}:{port.get('port')}")
    text_value = ",".join(found)
    if more:
        return f"{text_value} + {count - limit} more..."
    return text_value or "<none>"
