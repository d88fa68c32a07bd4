"""From a Service and the pods of its namespace to EndpointSlices and v1 Endpoints (pure).

Everything here works on small frozen views built from raw API dicts (``pod_view``,
``service_view``), so the endpoint operator's indexes hold a few hundred bytes per pod
instead of whole bodies, and every rule is unit-tested without a server.

Rules (as upstream's EndpointSlice controller, unless noted):

- a Service with no selector (or an empty one) is not managed: its endpoints are the
  user's; ExternalName Services have none;
- a pod is an endpoint when it matches every selector pair, has an IP of the slice's
  address family, and is not in a terminal phase (Succeeded / Failed);
- conditions: ``serving`` = the pod's Ready condition; ``terminating`` = it has a
  deletionTimestamp; ``ready`` = serving and not terminating (always true with
  ``publishNotReadyAddresses``);
- a numeric ``targetPort`` is used as is (absent means the Service port); a named one is
  resolved per pod: the first container port, in container order then port order, whose
  name *and protocol* match. The seed's pod has two ports both named ``nginx`` (6800 and
  6880): ``nginx`` resolves to 6800, the first, every time. A pod without the name is
  left out of that port (and reported, so the operator can post an Event); a pod that
  resolves none of the Service's ports is left out entirely;
- endpoints are grouped by their resolved port set (a slice has one port list) and cut
  into slices of at most 100, named by position (``<service>-0``, ``<service>-1``, ...;
  ``<service>-ipv6-0`` for IPv6) so replicas agree on names and updates land in place;
  a Service that selects nothing keeps one empty slice, as upstream does;
- v1 Endpoints leave terminating pods out and put not-ready ones in
  ``notReadyAddresses``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RawObject = dict[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.minik8s.io"
SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
MAX_ENDPOINTS_PER_SLICE = 100
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, slots=True)
class ContainerPortView:
    name: str
    protocol: str
    number: int


@dataclass(frozen=True, slots=True)
class PodView:
    namespace: str
    name: str
    uid: str
    labels: tuple[tuple[str, str], ...]
    ips: tuple[str, ...]
    node_name: str | None
    ready: bool
    terminating: bool
    terminal: bool
    ports: tuple[ContainerPortView, ...]

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def ip_of(self, family: str) -> str | None:
        want_v6 = family == "IPv6"
        for ip in self.ips:
            if (":" in ip) == want_v6:
                return ip
        return None


@dataclass(frozen=True, slots=True)
class ServicePortView:
    name: str
    port: int
    protocol: str
    target: int | str
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceView:
    namespace: str
    name: str
    uid: str
    selector: tuple[tuple[str, str], ...]
    ports: tuple[ServicePortView, ...]
    ip_families: tuple[str, ...] = ("IPv4",)
    publish_not_ready: bool = False
    type: str = "ClusterIP"
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def managed(self) -> bool:
        """True if the endpoint operator owns this Service's endpoints."""
        return bool(self.selector) and self.type != "ExternalName"


@dataclass(frozen=True, slots=True)
class EndpointPortView:
    name: str
    port: int
    protocol: str
    app_protocol: str | None = None

    def to_slice_wire(self) -> RawObject:
        out: RawObject = {"name": self.name, "port": self.port, "protocol": self.protocol}
        if self.app_protocol:
            out["appProtocol"] = self.app_protocol
        return out


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A pod left out of one Service port because it has no such named port."""

    pod: str
    port_name: str
    target: str
    protocol: str

    def message(self) -> str:
        return (
            f"pod {self.pod} has no container port named {self.target!r} with protocol "
            f"{self.protocol}; it is left out of Service port {self.port_name or '(unnamed)'}"
        )


# -- views from raw objects -----------------------------------------------------------


def _labels(meta: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (meta.get("labels") or {}).items()))


def _pod_ready(status: Mapping[str, Any]) -> bool:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def pod_view(body: Mapping[str, Any]) -> PodView:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    ips: list[str] = [ip["ip"] for ip in status.get("podIPs") or [] if ip.get("ip")]
    if status.get("podIP") and status["podIP"] not in ips:
        ips.insert(0, status["podIP"])
    ports: list[ContainerPortView] = []
    for container in spec.get("containers") or []:
        for port in container.get("ports") or []:
            number = port.get("containerPort")
            if not isinstance(number, int):
                continue
            ports.append(
                ContainerPortView(
                    name=port.get("name") or "",
                    protocol=port.get("protocol") or "TCP",
                    number=number,
                )
            )
    return PodView(
        namespace=meta.get("namespace") or "default",
        name=meta.get("name") or "",
        uid=meta.get("uid") or "",
        labels=_labels(meta),
        ips=tuple(ips),
        node_name=spec.get("nodeName") or None,
        ready=_pod_ready(status),
        terminating=bool(meta.get("deletionTimestamp")),
        terminal=status.get("phase") in TERMINAL_PHASES,
        ports=tuple(ports),
    )


def _target(port: Mapping[str, Any]) -> int | str:
    target = port.get("targetPort")
    if target is None or target == "" or target == 0:
        return int(port.get("port") or 0)
    if isinstance(target, str) and target.isdigit():
        return int(target)
    return target if isinstance(target, str) else int(target)


def service_view(body: Mapping[str, Any]) -> ServiceView:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    ports = tuple(
        ServicePortView(
            name=p.get("name") or "",
            port=int(p.get("port") or 0),
            protocol=p.get("protocol") or "TCP",
            target=_target(p),
            app_protocol=p.get("appProtocol"),
        )
        for p in spec.get("ports") or []
    )
    families = tuple(spec.get("ipFamilies") or ()) or ("IPv4",)
    return ServiceView(
        namespace=meta.get("namespace") or "default",
        name=meta.get("name") or "",
        uid=meta.get("uid") or "",
        selector=tuple(sorted((str(k), str(v)) for k, v in (spec.get("selector") or {}).items())),
        ports=ports,
        ip_families=families,
        publish_not_ready=bool(spec.get("publishNotReadyAddresses")),
        type=spec.get("type") or "ClusterIP",
        labels=_labels(meta),
    )


# -- selection and ports --------------------------------------------------------------


def selector_matches(selector: Iterable[tuple[str, str]], labels: Mapping[str, str]) -> bool:
    """Service selector semantics: every pair must match; an empty selector matches nothing."""
    pairs = tuple(selector)
    if not pairs:
        return False
    return all(labels.get(key) == value for key, value in pairs)


def resolve_target_port(port: ServicePortView, pod: PodView) -> int | None:
    """The pod's port number for a Service port, or None if a named port is missing.

    A named target is resolved against the pod's container ports in container order,
    then port order: the first with that name and the Service port's protocol wins.
    """
    if isinstance(port.target, int):
        return port.target
    for cport in pod.ports:
        if cport.name == port.target and cport.protocol == port.protocol:
            return cport.number
    return None


def endpoint_ports(
    service: ServiceView, pod: PodView
) -> tuple[tuple[EndpointPortView, ...], list[Unresolved]]:
    ports: list[EndpointPortView] = []
    missing: list[Unresolved] = []
    for sport in service.ports:
        number = resolve_target_port(sport, pod)
        if number is None:
            missing.append(Unresolved(pod.name, sport.name, str(sport.target), sport.protocol))
            continue
        ports.append(EndpointPortView(sport.name, number, sport.protocol, sport.app_protocol))
    return tuple(ports), missing


def is_candidate(pod: PodView) -> bool:
    return bool(pod.ips) and not pod.terminal


def endpoint_conditions(pod: PodView, *, publish_not_ready: bool = False) -> dict[str, bool]:
    serving = pod.ready
    ready = True if publish_not_ready else (serving and not pod.terminating)
    return {"ready": ready, "serving": serving, "terminating": pod.terminating}


def selected_pods(service: ServiceView, pods: Iterable[PodView]) -> list[PodView]:
    """The pods a Service selects that can be endpoints, sorted by name."""
    if not service.managed:
        return []
    chosen = [
        pod
        for pod in pods
        if pod.namespace == service.namespace
        and is_candidate(pod)
        and selector_matches(service.selector, pod.label_map)
    ]
    return sorted(chosen, key=lambda p: p.name)


# -- desired objects ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Desired:
    slices: list[RawObject]
    endpoints: RawObject
    unresolved: list[Unresolved]


def slice_name(service: str, family: str, index: int) -> str:
    return f"{service}-{index}" if family == "IPv4" else f"{service}-{family.lower()}-{index}"


def owner_reference(service: ServiceView) -> RawObject:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "name": service.name,
        "uid": service.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _endpoint(pod: PodView, ip: str, publish_not_ready: bool) -> RawObject:
    out: RawObject = {
        "addresses": [ip],
        "conditions": endpoint_conditions(pod, publish_not_ready=publish_not_ready),
        "targetRef": {"kind": "Pod", "namespace": pod.namespace, "name": pod.name, "uid": pod.uid},
    }
    if pod.node_name:
        out["nodeName"] = pod.node_name
    return out


def _chunks(items: Sequence[RawObject], size: int) -> list[Sequence[RawObject]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def desired_state(
    service: ServiceView,
    pods: Iterable[PodView],
    *,
    trigger_time: str,
    max_per_slice: int = MAX_ENDPOINTS_PER_SLICE,
) -> Desired:
    """The EndpointSlices and Endpoints a managed Service should have."""
    chosen = selected_pods(service, pods)
    unresolved: list[Unresolved] = []
    resolved: list[tuple[PodView, tuple[EndpointPortView, ...]]] = []
    for pod in chosen:
        ports, missing = endpoint_ports(service, pod)
        unresolved.extend(missing)
        if service.ports and not ports:
            continue  # resolves none of the Service's ports: not an endpoint at all
        resolved.append((pod, ports))

    labels = {SERVICE_NAME_LABEL: service.name, MANAGED_BY_LABEL: CONTROLLER_NAME}
    slices: list[RawObject] = []
    for family in service.ip_families:
        groups: dict[tuple[EndpointPortView, ...], list[RawObject]] = {}
        for pod, ports in resolved:
            ip = pod.ip_of(family)
            if ip is not None:
                groups.setdefault(ports, []).append(_endpoint(pod, ip, service.publish_not_ready))
        bodies: list[tuple[tuple[EndpointPortView, ...], Sequence[RawObject]]] = []
        for ports in sorted(groups, key=_ports_key):
            bodies.extend((ports, chunk) for chunk in _chunks(groups[ports], max_per_slice))
        if not bodies:
            bodies.append(((), []))  # the placeholder slice of a Service with no endpoints
        for index, (ports, endpoints) in enumerate(bodies):
            slices.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": slice_name(service.name, family, index),
                        "namespace": service.namespace,
                        "labels": dict(labels),
                        "annotations": {TRIGGER_TIME_ANNOTATION: trigger_time},
                        "ownerReferences": [owner_reference(service)],
                    },
                    "addressType": family,
                    "endpoints": list(endpoints),
                    "ports": [p.to_slice_wire() for p in ports],
                }
            )
    return Desired(slices, _endpoints_object(service, resolved, trigger_time), unresolved)


def _ports_key(ports: tuple[EndpointPortView, ...]) -> tuple[tuple[str, int, str], ...]:
    return tuple((p.name, p.port, p.protocol) for p in ports)


def _endpoints_object(
    service: ServiceView,
    resolved: Sequence[tuple[PodView, tuple[EndpointPortView, ...]]],
    trigger_time: str,
) -> RawObject:
    subsets: dict[tuple[EndpointPortView, ...], dict[str, list[RawObject]]] = {}
    for pod, ports in resolved:
        if pod.terminating and not service.publish_not_ready:
            continue
        ip = pod.ip_of(service.ip_families[0])
        if ip is None:
            continue
        address: RawObject = {
            "ip": ip,
            "targetRef": {
                "kind": "Pod",
                "namespace": pod.namespace,
                "name": pod.name,
                "uid": pod.uid,
            },
        }
        if pod.node_name:
            address["nodeName"] = pod.node_name
        ready = pod.ready or service.publish_not_ready
        entry = subsets.setdefault(ports, {"addresses": [], "notReadyAddresses": []})
        entry["addresses" if ready else "notReadyAddresses"].append(address)
    wire_subsets: list[RawObject] = []
    for ports in sorted(subsets, key=_ports_key):
        subset: RawObject = {}
        for key in ("addresses", "notReadyAddresses"):
            if subsets[ports][key]:
                subset[key] = sorted(subsets[ports][key], key=lambda a: str(a["ip"]))
        subset["ports"] = [
            {"name": p.name, "port": p.port, "protocol": p.protocol}
            | ({"appProtocol": p.app_protocol} if p.app_protocol else {})
            for p in ports
        ]
        wire_subsets.append(subset)
    labels = dict(service.labels) | {SKIP_MIRROR_LABEL: "true"}
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": service.name,
            "namespace": service.namespace,
            "labels": labels,
            "annotations": {TRIGGER_TIME_ANNOTATION: trigger_time},
            "ownerReferences": [owner_reference(service)],
        },
        "subsets": wire_subsets,
    }


# -- comparing with what is stored ----------------------------------------------------


def slice_essence(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What decides whether a stored slice must be rewritten (not the trigger time)."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    return (
        body.get("addressType"),
        _canonical(body.get("endpoints") or []),
        _canonical(body.get("ports") or []),
        labels.get(SERVICE_NAME_LABEL),
        labels.get(MANAGED_BY_LABEL),
        _canonical([(r.get("uid"), r.get("name")) for r in meta.get("ownerReferences") or []]),
    )


def endpoints_essence(body: Mapping[str, Any]) -> tuple[Any, ...]:
    meta = body.get("metadata") or {}
    return (
        _canonical(body.get("subsets") or []),
        _canonical(meta.get("labels") or {}),
        _canonical([(r.get("uid"), r.get("name")) for r in meta.get("ownerReferences") or []]),
    )


def _canonical(value: Any) -> Any:
    """A hashable, order-preserving-for-lists, order-free-for-maps form of JSON data."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_canonical(v) for v in value)
    return value


@dataclass(frozen=True, slots=True)
class SliceChanges:
    create: list[RawObject]
    update: list[RawObject]
    delete: list[str]

    def __bool__(self) -> bool:
        return bool(self.create or self.update or self.delete)


def slice_changes(
    desired: Sequence[RawObject], current: Mapping[str, Mapping[str, Any]]
) -> SliceChanges:
    """Writes that turn ``current`` (slice name -> stored body) into ``desired``."""
    create: list[RawObject] = []
    update: list[RawObject] = []
    wanted: set[str] = set()
    for body in desired:
        name = body["metadata"]["name"]
        wanted.add(name)
        stored = current.get(name)
        if stored is None:
            create.append(body)
        elif slice_essence(stored) != slice_essence(body):
            update.append(body)
    delete = sorted(name for name in current if name not in wanted)
    return SliceChanges(create, update, delete)
