"""v1 Service: upstream's defaults, validation, immutable ClusterIP, and table columns."""

from __future__ import annotations

from typing import Any

from apiserver.strategies.access import dicts, dig, sub, text
from apiserver.strategy import GenericStrategy, RawObject
from apiserver.tables import AGE_COLUMN, NAME_COLUMN, Column, format_labels
from apiserver.validation import (
    IMMUTABLE,
    Cause,
    child,
    duplicate,
    forbidden,
    index,
    invalid,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_qualified_name,
    is_valid_port_name,
    is_valid_port_num,
    one_of,
    parse_ip,
    required,
    validate_ip,
    validate_labels,
)
from minik8s.models import Service

SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
PROTOCOLS = ("SCTP", "TCP", "UDP")
HEADLESS = "None"


def _go_service_port(port: int, protocol: str) -> str:
    """The key upstream reports for a duplicate port, as Go's %#v prints it."""
    return (
        f'core.ServicePort{{Name:"", Protocol:"{protocol}", AppProtocol:(*string)(nil), '
        f'Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:""}}, NodePort:0}}'
    )


class ServiceStrategy(GenericStrategy):
    model = Service
    name_validator = staticmethod(is_dns1035_label)
    extra_fields = ("spec.clusterIP", "spec.type")

    def __init__(self) -> None:
        super().__init__(namespaced=True, has_status=True)

    def prepare_for_create(self, obj: RawObject) -> None:
        super().prepare_for_create(obj)
        obj["status"] = {"loadBalancer": {}}

    def default(self, obj: RawObject) -> None:
        spec = sub(obj, "spec")
        if spec is None:
            if "spec" in obj:
                return
            spec = obj["spec"] = {}
        svc_type = spec.setdefault("type", "ClusterIP")
        affinity = spec.setdefault("sessionAffinity", "None")
        if affinity == "ClientIP" and not spec.get("sessionAffinityConfig"):
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 10800}}
        for _, port in dicts(spec.get("ports")):
            port.setdefault("protocol", "TCP")
            if port.get("targetPort") in (None, 0, "") and "port" in port:
                port["targetPort"] = port["port"]
        if svc_type == "ExternalName":
            return
        spec.setdefault("internalTrafficPolicy", "Cluster")
        if svc_type in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        if svc_type == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        cluster_ip = spec.get("clusterIP")
        cluster_ips = spec.get("clusterIPs")
        if isinstance(cluster_ip, str) and cluster_ip and not cluster_ips:
            spec["clusterIPs"] = [cluster_ip]
        elif isinstance(cluster_ips, list) and cluster_ips and not cluster_ip:
            spec["clusterIP"] = cluster_ips[0]
        if "ipFamilies" not in spec:
            ip_text = text(spec.get("clusterIP"))
            ip = parse_ip(ip_text) if ip_text else None
            spec["ipFamilies"] = ["IPv6" if ip is not None and ip.version == 6 else "IPv4"]
        spec.setdefault("ipFamilyPolicy", "SingleStack")

    def prepare_for_update(self, new: RawObject, old: RawObject) -> None:
        # As upstream's patchAllocatedValues: a PUT or apply that leaves out what the
        # allocator set keeps it (kubectl replace works without spec.clusterIP).
        new_spec, old_spec = sub(new, "spec"), sub(old, "spec")
        if new_spec is not None and old_spec is not None:
            if not new_spec.get("clusterIP") and old_spec.get("clusterIP"):
                new_spec["clusterIP"] = old_spec["clusterIP"]
                if not new_spec.get("clusterIPs") and "clusterIPs" in old_spec:
                    new_spec["clusterIPs"] = list(old_spec["clusterIPs"])
            if (
                new_spec.get("clusterIP") != old_spec.get("clusterIP")
                and new_spec.get("clusterIPs") == old_spec.get("clusterIPs")
                and isinstance(new_spec.get("clusterIP"), str)
            ):
                new_spec["clusterIPs"] = [new_spec["clusterIP"]]
            old_node_ports = {
                (p.get("port"), p.get("protocol", "TCP")): p["nodePort"]
                for _, p in dicts(old_spec.get("ports"))
                if p.get("nodePort")
            }
            if new_spec.get("type") in ("NodePort", "LoadBalancer"):
                for _, port in dicts(new_spec.get("ports")):
                    key = (port.get("port"), port.get("protocol", "TCP"))
                    if not port.get("nodePort") and key in old_node_ports:
                        port["nodePort"] = old_node_ports[key]
            if not new_spec.get("healthCheckNodePort") and old_spec.get("healthCheckNodePort"):
                if new_spec.get("externalTrafficPolicy") == "Local":
                    new_spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"]
        super().prepare_for_update(new, old)

    def validate_kind(self, obj: RawObject) -> list[Cause]:
        spec = sub(obj, "spec")
        if spec is None:
            return [required("spec")]
        causes: list[Cause] = []
        svc_type = spec.get("type")
        causes += one_of("spec.type", svc_type, SERVICE_TYPES)
        causes += one_of("spec.sessionAffinity", spec.get("sessionAffinity"), ("ClientIP", "None"))
        cluster_ip = spec.get("clusterIP")
        headless = cluster_ip == HEADLESS
        ports = spec.get("ports")
        if not ports and not headless and svc_type != "ExternalName":
            causes.append(required("spec.ports"))
        causes += self._validate_ports(spec, svc_type)
        selector = spec.get("selector")
        if isinstance(selector, dict):
            causes += validate_labels(selector, "spec.selector")
        cluster_ips = spec.get("clusterIPs")
        if isinstance(cluster_ips, list):
            for i, ip in enumerate(cluster_ips):
                if not isinstance(ip, str) or (i == 0 and ip == HEADLESS):
                    continue
                causes += validate_ip(index("spec.clusterIPs", i), ip)
            if cluster_ips and isinstance(cluster_ip, str) and cluster_ip != cluster_ips[0]:
                causes.append(
                    invalid("spec.clusterIPs", cluster_ips, "first value must match `clusterIP`")
                )
        for i, ip in enumerate(spec.get("externalIPs") or []):
            if isinstance(ip, str):
                causes += validate_ip(index("spec.externalIPs", i), ip)
        if svc_type == "ExternalName":
            name = spec.get("externalName")
            if not name:
                causes.append(required("spec.externalName"))
            elif isinstance(name, str):
                causes += [
                    invalid("spec.externalName", name, msg) for msg in is_dns1123_subdomain(name)
                ]
        if "ipFamilyPolicy" in spec:
            causes += one_of(
                "spec.ipFamilyPolicy",
                spec["ipFamilyPolicy"],
                ("PreferDualStack", "RequireDualStack", "SingleStack"),
            )
        for i, family in enumerate(spec.get("ipFamilies") or []):
            causes += one_of(index("spec.ipFamilies", i), family, ("IPv4", "IPv6"))
        if "internalTrafficPolicy" in spec:
            causes += one_of(
                "spec.internalTrafficPolicy", spec["internalTrafficPolicy"], ("Cluster", "Local")
            )
        if spec.get("externalTrafficPolicy"):
            if svc_type in ("ClusterIP", "ExternalName"):
                causes.append(
                    invalid(
                        "spec.externalTrafficPolicy",
                        spec["externalTrafficPolicy"],
                        "may only be set for externally-accessible services",
                    )
                )
            else:
                causes += one_of(
                    "spec.externalTrafficPolicy",
                    spec["externalTrafficPolicy"],
                    ("Cluster", "Local"),
                )
        return causes

    def _validate_ports(self, spec: dict[str, Any], svc_type: Any) -> list[Cause]:
        causes: list[Cause] = []
        ports = dicts(spec.get("ports"))
        names: set[str] = set()
        keys: set[tuple[Any, Any]] = set()
        for i, port in ports:
            path = index("spec.ports", i)
            name = port.get("name")
            if not name:
                if len(ports) > 1:
                    causes.append(required(child(path, "name")))
            elif isinstance(name, str):
                if problems := is_dns1123_label(name):
                    causes += [invalid(child(path, "name"), name, m) for m in problems]
                if name in names:
                    causes.append(duplicate(child(path, "name"), name))
                names.add(name)
            number = port.get("port")
            if isinstance(number, int) and not isinstance(number, bool):
                if problems := is_valid_port_num(number):
                    causes += [invalid(child(path, "port"), number, m) for m in problems]
            protocol = port.get("protocol")
            causes += one_of(child(path, "protocol"), protocol, PROTOCOLS)
            target = port.get("targetPort")
            if isinstance(target, bool):
                pass
            elif isinstance(target, int):
                if problems := is_valid_port_num(target):
                    causes += [invalid(child(path, "targetPort"), target, m) for m in problems]
            elif isinstance(target, str):
                if problems := is_valid_port_name(target):
                    causes += [invalid(child(path, "targetPort"), target, m) for m in problems]
            node_port = port.get("nodePort")
            if node_port and svc_type in ("ClusterIP", "ExternalName"):
                causes.append(
                    forbidden(
                        child(path, "nodePort"), f"may not be used when `type` is '{svc_type}'"
                    )
                )
            elif isinstance(node_port, int) and node_port:
                causes += [
                    invalid(child(path, "nodePort"), node_port, m)
                    for m in is_valid_port_num(node_port)
                ]
            app_protocol = port.get("appProtocol")
            if isinstance(app_protocol, str):
                causes += [
                    invalid(child(path, "appProtocol"), app_protocol, m)
                    for m in is_qualified_name(app_protocol)
                ]
            key = (number, protocol)
            if key in keys and isinstance(number, int) and isinstance(protocol, str):
                causes.append(duplicate(path, key, shown=_go_service_port(number, protocol)))
            keys.add(key)
        return causes

    def validate_kind_update(self, new: RawObject, old: RawObject) -> list[Cause]:
        old_ip = dig(old, "spec", "clusterIP")
        new_ip = dig(new, "spec", "clusterIP")
        if "ExternalName" in (dig(new, "spec", "type"), dig(old, "spec", "type")):
            return []
        if old_ip and new_ip != old_ip:
            return [invalid("spec.clusterIP", new_ip if new_ip is not None else "", IMMUTABLE)]
        return []

    def validate_status(self, obj: RawObject) -> list[Cause]:
        causes: list[Cause] = []
        for i, ingress in dicts(dig(obj, "status", "loadBalancer", "ingress")):
            path = index("status.loadBalancer.ingress", i)
            ip = ingress.get("ip")
            if isinstance(ip, str) and ip:
                causes += validate_ip(child(path, "ip"), ip)
            if "ipMode" in ingress:
                causes += one_of(child(path, "ipMode"), ingress["ipMode"], ("Proxy", "VIP"))
        return causes

    def kind_fields(self, obj: RawObject) -> dict[str, str]:
        return {
            "spec.clusterIP": text(dig(obj, "spec", "clusterIP")),
            "spec.type": text(dig(obj, "spec", "type")),
        }

    columns = (
        NAME_COLUMN,
        Column(
            "Type",
            lambda obj, now: text(dig(obj, "spec", "type")),
            description="How the service is exposed (ClusterIP, NodePort, LoadBalancer...).",
        ),
        Column(
            "Cluster-IP",
            lambda obj, now: text(dig(obj, "spec", "clusterIP")) or "<none>",
            description="The IP address of the service.",
        ),
        Column(
            "External-IP",
            lambda obj, now: external_ip(obj),
            description="The external IP addresses of the service.",
        ),
        Column(
            "Port(s)",
            lambda obj, now: port_string(obj),
            description="The ports of the service.",
        ),
        AGE_COLUMN,
        Column(
            "Selector",
            lambda obj, now: format_labels(dig(obj, "spec", "selector")),
            priority=1,
            description="Route service traffic to pods with label keys and values matching "
            "this selector.",
        ),
    )


def external_ip(obj: RawObject) -> str:
    """kubectl's getServiceExternalIP."""
    svc_type = dig(obj, "spec", "type")
    external = [ip for ip in dig(obj, "spec", "externalIPs") or [] if isinstance(ip, str)]
    if svc_type in ("ClusterIP", "NodePort", None):
        return ",".join(external) if external else "<none>"
    if svc_type == "LoadBalancer":
        found = []
        for _, ingress in dicts(dig(obj, "status", "loadBalancer", "ingress")):
            if ingress.get("ip"):
                found.append(str(ingress["ip"]))
            elif ingress.get("hostname"):
                found.append(str(ingress["hostname"]))
        found += external
        return ",".join(found) if found else "<pending>"
    if svc_type == "ExternalName":
        return text(dig(obj, "spec", "externalName"))
    return "<unknown>"


def port_string(obj: RawObject) -> str:
    """kubectl's makePortString: ``80/TCP,30080:32000/TCP``."""
    parts = []
    for _, port in dicts(dig(obj, "spec", "ports")):
        protocol = port.get("protocol", "TCP")
        if port.get("nodePort"):
            parts.append(f"{port.get('port')}:{port['nodePort']}/{protocol}")
        else:
            parts.append(f"{port.get('port')}/{protocol}")
    return ",".join(parts) if parts else "<none>"
