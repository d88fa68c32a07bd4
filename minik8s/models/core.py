"""core/v1 kinds: Namespace, Pod, Service, Endpoints, Event, Node, ConfigMap.

Only the fields this project reads or validates are typed; everything else survives
as an extra field (``extra="allow"``), so objects round-trip whole.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field

from minik8s.models.base import KubeModel, KubeObject
from minik8s.models.meta import (
    Condition,
    LocalObjectReference,
    ObjectMeta,
    ObjectReference,
    Time,
)

IntOrString = int | str

QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
_QUANTITY = re.compile(QUANTITY_PATTERN)


def _check_quantity(value: int | float | str) -> int | float | str:
    if isinstance(value, str) and not _QUANTITY.match(value):
        raise ValueError(f"quantities must match the regular expression '{QUANTITY_PATTERN}'")
    return value


Quantity = Annotated[int | float | str, AfterValidator(_check_quantity)]
"""A resource quantity (``100m``, ``1Gi``, ``2``), kept as sent."""

# --------------------------------------------------------------------------- Namespace


class NamespaceSpec(KubeModel):
    finalizers: list[str] | None = None


class NamespaceStatus(KubeModel):
    phase: str | None = None
    conditions: list[dict[str, Any]] | None = None


class Namespace(KubeObject):
    KIND = "Namespace"
    PLURAL = "namespaces"

    api_version: str = "v1"
    kind: str = "Namespace"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: NamespaceSpec | None = None
    status: NamespaceStatus | None = None


# --------------------------------------------------------------------------- Pod


class ContainerPort(KubeModel):
    name: str | None = None
    host_port: int | None = None
    container_port: int
    protocol: str | None = None
    host_ip: str | None = None


class EnvVar(KubeModel):
    name: str
    value: str | None = None
    value_from: dict[str, Any] | None = None


class VolumeMount(KubeModel):
    name: str
    read_only: bool | None = None
    recursive_read_only: str | None = None
    mount_path: str
    sub_path: str | None = None
    mount_propagation: str | None = None
    sub_path_expr: str | None = None


class Volume(KubeModel):
    """A named volume; its source (emptyDir, configMap, ...) is kept as an extra field."""

    OPEN: ClassVar[bool] = True

    name: str


class Probe(KubeModel):
    exec: dict[str, Any] | None = None
    http_get: dict[str, Any] | None = None
    tcp_socket: dict[str, Any] | None = None
    grpc: dict[str, Any] | None = None
    initial_delay_seconds: int | None = None
    timeout_seconds: int | None = None
    period_seconds: int | None = None
    success_threshold: int | None = None
    failure_threshold: int | None = None
    termination_grace_period_seconds: int | None = None


class ResourceRequirements(KubeModel):
    limits: dict[str, Quantity] | None = None
    requests: dict[str, Quantity] | None = None
    claims: list[dict[str, Any]] | None = None


class Container(KubeModel):
    name: str
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    working_dir: str | None = None
    ports: list[ContainerPort] | None = None
    env_from: list[dict[str, Any]] | None = None
    env: list[EnvVar] | None = None
    resources: ResourceRequirements | None = None
    volume_mounts: list[VolumeMount] | None = None
    resize_policy: list[dict[str, Any]] | None = None
    restart_policy: str | None = None
    volume_devices: list[dict[str, Any]] | None = None
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    startup_probe: Probe | None = None
    lifecycle: dict[str, Any] | None = None
    termination_message_path: str | None = None
    termination_message_policy: str | None = None
    image_pull_policy: str | None = None
    security_context: dict[str, Any] | None = None
    stdin: bool | None = None
    stdin_once: bool | None = None
    tty: bool | None = None


class Toleration(KubeModel):
    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None


class PodReadinessGate(KubeModel):
    condition_type: str


class PodSpec(KubeModel):
    volumes: list[Volume] | None = None
    init_containers: list[Container] | None = None
    containers: list[Container]
    ephemeral_containers: list[dict[str, Any]] | None = None
    restart_policy: str | None = None
    termination_grace_period_seconds: int | None = None
    active_deadline_seconds: int | None = None
    dns_policy: str | None = None
    node_selector: dict[str, str] | None = None
    service_account_name: str | None = None
    service_account: str | None = None
    automount_service_account_token: bool | None = None
    node_name: str | None = None
    host_network: bool | None = None
    host_pid: bool | None = None
    host_ipc: bool | None = None
    share_process_namespace: bool | None = None
    security_context: dict[str, Any] | None = None
    image_pull_secrets: list[LocalObjectReference] | None = None
    hostname: str | None = None
    subdomain: str | None = None
    affinity: dict[str, Any] | None = None
    scheduler_name: str | None = None
    tolerations: list[Toleration] | None = None
    host_aliases: list[dict[str, Any]] | None = None
    priority_class_name: str | None = None
    priority: int | None = None
    readiness_gates: list[PodReadinessGate] | None = None
    enable_service_links: bool | None = None
    preemption_policy: str | None = None
    topology_spread_constraints: list[dict[str, Any]] | None = None
    dns_config: dict[str, Any] | None = None
    runtime_class_name: str | None = None
    overhead: dict[str, Quantity] | None = None
    set_hostname_as_fqdn: bool | None = Field(default=None, alias="setHostnameAsFQDN")
    os: dict[str, Any] | None = None
    host_users: bool | None = None
    scheduling_gates: list[dict[str, Any]] | None = None
    resource_claims: list[dict[str, Any]] | None = None
    resources: ResourceRequirements | None = None


class PodCondition(KubeModel):
    type: str
    status: str
    last_probe_time: Time | None = None
    last_transition_time: Time | None = None
    reason: str | None = None
    message: str | None = None


class ContainerStateWaiting(KubeModel):
    reason: str | None = None
    message: str | None = None


class ContainerStateRunning(KubeModel):
    started_at: Time | None = None


class ContainerStateTerminated(KubeModel):
    exit_code: int
    signal: int | None = None
    reason: str | None = None
    message: str | None = None
    started_at: Time | None = None
    finished_at: Time | None = None
    container_id: str | None = None


class ContainerState(KubeModel):
    waiting: ContainerStateWaiting | None = None
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None


class ContainerStatus(KubeModel):
    name: str
    state: ContainerState | None = None
    last_state: ContainerState | None = None
    ready: bool = False
    restart_count: int = 0
    image: str | None = None
    image_id: str | None = None
    container_id: str | None = None
    started: bool | None = None
    allocated_resources: dict[str, Quantity] | None = None
    resources: ResourceRequirements | None = None
    volume_mounts: list[dict[str, Any]] | None = None
    user: dict[str, Any] | None = None
    allocated_resources_status: list[dict[str, Any]] | None = None


class PodIP(KubeModel):
    ip: str


class HostIP(KubeModel):
    ip: str


class PodStatus(KubeModel):
    phase: str | None = None
    conditions: list[PodCondition] | None = None
    message: str | None = None
    reason: str | None = None
    nominated_node_name: str | None = None
    host_ip: str | None = None
    host_ips: list[HostIP] | None = None
    pod_ip: str | None = None
    pod_ips: list[PodIP] | None = None
    start_time: Time | None = None
    init_container_statuses: list[ContainerStatus] | None = None
    container_statuses: list[ContainerStatus] | None = None
    qos_class: str | None = None
    ephemeral_container_statuses: list[ContainerStatus] | None = None
    resize: str | None = None
    resource_claim_statuses: list[dict[str, Any]] | None = None


class Pod(KubeObject):
    KIND = "Pod"
    PLURAL = "pods"

    api_version: str = "v1"
    kind: str = "Pod"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec | None = None
    status: PodStatus | None = None


# --------------------------------------------------------------------------- Service


class ServicePort(KubeModel):
    name: str | None = None
    protocol: str | None = None
    app_protocol: str | None = None
    port: int
    target_port: IntOrString | None = None
    node_port: int | None = None


class ServiceSpec(KubeModel):
    ports: list[ServicePort] | None = None
    selector: dict[str, str] | None = None
    cluster_ip: str | None = None
    cluster_ips: list[str] | None = None
    type: str | None = None
    external_ips: list[str] | None = None
    session_affinity: str | None = None
    load_balancer_ip: str | None = None
    load_balancer_source_ranges: list[str] | None = None
    external_name: str | None = None
    external_traffic_policy: str | None = None
    health_check_node_port: int | None = None
    publish_not_ready_addresses: bool | None = None
    session_affinity_config: dict[str, Any] | None = None
    ip_families: list[str] | None = None
    ip_family_policy: str | None = None
    allocate_load_balancer_node_ports: bool | None = None
    load_balancer_class: str | None = None
    internal_traffic_policy: str | None = None
    traffic_distribution: str | None = None


class PortStatus(KubeModel):
    port: int
    protocol: str
    error: str | None = None


class LoadBalancerIngress(KubeModel):
    ip: str | None = None
    hostname: str | None = None
    ip_mode: str | None = None
    ports: list[PortStatus] | None = None


class LoadBalancerStatus(KubeModel):
    ingress: list[LoadBalancerIngress] | None = None


class ServiceStatus(KubeModel):
    load_balancer: LoadBalancerStatus | None = None
    conditions: list[Condition] | None = None


class Service(KubeObject):
    KIND = "Service"
    PLURAL = "services"

    api_version: str = "v1"
    kind: str = "Service"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ServiceSpec | None = None
    status: ServiceStatus | None = None


# --------------------------------------------------------------------------- Endpoints


class EndpointAddress(KubeModel):
    ip: str
    hostname: str | None = None
    node_name: str | None = None
    target_ref: ObjectReference | None = None


class EndpointPort(KubeModel):
    name: str | None = None
    port: int
    protocol: str | None = None
    app_protocol: str | None = None


class EndpointSubset(KubeModel):
    addresses: list[EndpointAddress] | None = None
    not_ready_addresses: list[EndpointAddress] | None = None
    ports: list[EndpointPort] | None = None


class Endpoints(KubeObject):
    KIND = "Endpoints"
    PLURAL = "endpoints"

    api_version: str = "v1"
    kind: str = "Endpoints"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    subsets: list[EndpointSubset] | None = None


# --------------------------------------------------------------------------- Event


class EventSource(KubeModel):
    component: str | None = None
    host: str | None = None


class EventSeries(KubeModel):
    count: int | None = None
    last_observed_time: Time | None = None


class Event(KubeObject):
    KIND = "Event"
    PLURAL = "events"

    api_version: str = "v1"
    kind: str = "Event"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    involved_object: ObjectReference | None = None
    reason: str | None = None
    message: str | None = None
    source: EventSource | None = None
    first_timestamp: Time | None = None
    last_timestamp: Time | None = None
    count: int | None = None
    type: str | None = None
    event_time: Time | None = None
    series: EventSeries | None = None
    action: str | None = None
    related: ObjectReference | None = None
    reporting_component: str | None = None
    reporting_instance: str | None = None


# --------------------------------------------------------------------------- Node


class Taint(KubeModel):
    key: str
    value: str | None = None
    effect: str
    time_added: Time | None = None


class NodeSpec(KubeModel):
    pod_cidr: str | None = None
    pod_cidrs: list[str] | None = None
    provider_id: str | None = None
    unschedulable: bool | None = None
    taints: list[Taint] | None = None
    config_source: dict[str, Any] | None = None
    external_id: str | None = Field(default=None, alias="externalID")


class NodeCondition(KubeModel):
    type: str
    status: str
    last_heartbeat_time: Time | None = None
    last_transition_time: Time | None = None
    reason: str | None = None
    message: str | None = None


class NodeAddress(KubeModel):
    type: str
    address: str


class NodeStatus(KubeModel):
    capacity: dict[str, Quantity] | None = None
    allocatable: dict[str, Quantity] | None = None
    phase: str | None = None
    conditions: list[NodeCondition] | None = None
    addresses: list[NodeAddress] | None = None
    daemon_endpoints: dict[str, Any] | None = None
    node_info: dict[str, Any] | None = None
    images: list[dict[str, Any]] | None = None
    volumes_in_use: list[str] | None = None
    volumes_attached: list[dict[str, Any]] | None = None
    config: dict[str, Any] | None = None
    runtime_handlers: list[dict[str, Any]] | None = None
    features: dict[str, Any] | None = None


class Node(KubeObject):
    KIND = "Node"
    PLURAL = "nodes"

    api_version: str = "v1"
    kind: str = "Node"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: NodeSpec | None = None
    status: NodeStatus | None = None


# --------------------------------------------------------------------------- ConfigMap


class ConfigMap(KubeObject):
    KIND = "ConfigMap"
    PLURAL = "configmaps"

    api_version: str = "v1"
    kind: str = "ConfigMap"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    data: dict[str, str] | None = None
    binary_data: dict[str, str] | None = None
    immutable: bool | None = None
