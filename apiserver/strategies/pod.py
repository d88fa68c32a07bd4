"""v1 Pod: upstream's defaults, status reset on create, validation, the READY/STATUS columns."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from apiserver.strategies.access import dicts, dig, sub, text
from apiserver.strategy import GenericStrategy, RawObject
from apiserver.tables import AGE_COLUMN, NAME_COLUMN, Column
from apiserver.validation import (
    Cause,
    child,
    duplicate,
    forbidden,
    index,
    invalid,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_env_var_name,
    is_qualified_name,
    is_valid_port_name,
    is_valid_port_num,
    not_found,
    not_supported,
    one_of,
    required,
    validate_ip,
    validate_labels,
)
from minik8s.models import Pod

PROTOCOLS = ("SCTP", "TCP", "UDP")
POD_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)


def _default_container(container: dict[str, Any]) -> None:
    image = text(container.get("image"))
    if "imagePullPolicy" not in container:
        last = image.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last and "@" not in last else ""
        latest = "@" not in image and tag in ("", "latest")
        container["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for _, port in dicts(container.get("ports")):
        port.setdefault("protocol", "TCP")


def qos_class(obj: RawObject) -> str:
    """qos.GetPodQOS, simplified to cpu and memory."""
    containers = [c for _, c in dicts(dig(obj, "spec", "containers"))]
    containers += [c for _, c in dicts(dig(obj, "spec", "initContainers"))]
    any_set = False
    guaranteed = True
    for container in containers:
        requests = dig(container, "resources", "requests") or {}
        limits = dig(container, "resources", "limits") or {}
        if requests or limits:
            any_set = True
        for resource in ("cpu", "memory"):
            if (
                resource not in limits
                or requests.get(resource, limits[resource]) != limits[resource]
            ):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _sync_ips(status: dict[str, Any], single: str, plural: str) -> None:
    """v1 conversion keeps podIP == podIPs[0].ip (and hostIP/hostIPs) whichever was sent."""
    ips = status.get(plural)
    one = status.get(single)
    if isinstance(ips, list) and ips and isinstance(ips[0], dict):
        status[single] = ips[0].get("ip", "")
    elif isinstance(one, str) and one and not ips:
        status[plural] = [{"ip": one}]


class PodStrategy(GenericStrategy):
    model = Pod
    extra_fields = (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    )

    def __init__(self) -> None:
        super().__init__(namespaced=True, has_status=True)

    def prepare_for_create(self, obj: RawObject) -> None:
        super().prepare_for_create(obj)
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(obj)}

    def default(self, obj: RawObject) -> None:
        spec = sub(obj, "spec")
        if spec is None:
            return
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("securityContext", {})
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("priority", 0)
        for name in ("containers", "initContainers"):
            for _, container in dicts(spec.get(name)):
                _default_container(container)
        self.default_status(obj)

    def default_status(self, obj: RawObject) -> None:
        status = sub(obj, "status")
        if status is not None:
            _sync_ips(status, "podIP", "podIPs")
            _sync_ips(status, "hostIP", "hostIPs")

    def validate_kind(self, obj: RawObject) -> list[Cause]:
        spec = sub(obj, "spec")
        if spec is None:
            return [required("spec.containers")]
        causes: list[Cause] = []
        volumes: set[str] = set()
        for i, volume in dicts(spec.get("volumes")):
            path = index("spec.volumes", i)
            name = text(volume.get("name"))
            if not name:
                causes.append(required(child(path, "name")))
                continue
            causes += [invalid(child(path, "name"), name, m) for m in is_dns1123_label(name)]
            if name in volumes:
                causes.append(duplicate(child(path, "name"), name))
            volumes.add(name)
        if not spec.get("containers"):
            causes.append(required("spec.containers"))
        names: set[str] = set()
        port_names: set[str] = set()
        for field in ("initContainers", "containers"):
            for i, container in dicts(spec.get(field)):
                causes += self._validate_container(
                    container, index(f"spec.{field}", i), names, port_names, volumes
                )
        causes += one_of(
            "spec.restartPolicy", spec.get("restartPolicy"), ("Always", "Never", "OnFailure")
        )
        causes += one_of(
            "spec.dnsPolicy",
            spec.get("dnsPolicy"),
            ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"),
        )
        node_name = spec.get("nodeName")
        if isinstance(node_name, str) and node_name:
            causes += [
                invalid("spec.nodeName", node_name, m) for m in is_dns1123_subdomain(node_name)
            ]
        deadline = spec.get("activeDeadlineSeconds")
        if isinstance(deadline, int) and deadline <= 0:
            causes.append(
                invalid(
                    "spec.activeDeadlineSeconds",
                    deadline,
                    "must be between 1 and 2147483647, inclusive",
                )
            )
        selector = spec.get("nodeSelector")
        if isinstance(selector, dict):
            causes += validate_labels(selector, "spec.nodeSelector")
        for i, toleration in dicts(spec.get("tolerations")):
            causes += validate_toleration(toleration, index("spec.tolerations", i))
        return causes

    def _validate_container(
        self,
        container: dict[str, Any],
        path: str,
        names: set[str],
        port_names: set[str],
        volumes: set[str],
    ) -> list[Cause]:
        causes: list[Cause] = []
        name = text(container.get("name"))
        if not name:
            causes.append(required(child(path, "name")))
        else:
            causes += [invalid(child(path, "name"), name, m) for m in is_dns1123_label(name)]
            if name in names:
                causes.append(duplicate(child(path, "name"), name))
            names.add(name)
        if not container.get("image"):
            causes.append(required(child(path, "image")))
        for i, port in dicts(container.get("ports")):
            port_path = index(child(path, "ports"), i)
            port_name = port.get("name")
            if isinstance(port_name, str) and port_name:
                causes += [
                    invalid(child(port_path, "name"), port_name, m)
                    for m in is_valid_port_name(port_name)
                ]
                if port_name in port_names:
                    causes.append(duplicate(child(port_path, "name"), port_name))
                port_names.add(port_name)
            number = port.get("containerPort")
            if not number:
                causes.append(required(child(port_path, "containerPort")))
            elif isinstance(number, int):
                causes += [
                    invalid(child(port_path, "containerPort"), number, m)
                    for m in is_valid_port_num(number)
                ]
            host_port = port.get("hostPort")
            if isinstance(host_port, int) and host_port:
                causes += [
                    invalid(child(port_path, "hostPort"), host_port, m)
                    for m in is_valid_port_num(host_port)
                ]
            causes += one_of(child(port_path, "protocol"), port.get("protocol"), PROTOCOLS)
        for i, env in dicts(container.get("env")):
            env_path = index(child(path, "env"), i)
            env_name = text(env.get("name"))
            if not env_name:
                causes.append(required(child(env_path, "name")))
            else:
                causes += [
                    invalid(child(env_path, "name"), env_name, m) for m in is_env_var_name(env_name)
                ]
        for i, mount in dicts(container.get("volumeMounts")):
            mount_path = index(child(path, "volumeMounts"), i)
            mount_name = text(mount.get("name"))
            if not mount_name:
                causes.append(required(child(mount_path, "name")))
            elif mount_name not in volumes:
                causes.append(not_found(child(mount_path, "name"), mount_name))
            if not mount.get("mountPath"):
                causes.append(required(child(mount_path, "mountPath")))
        if "imagePullPolicy" in container:
            causes += one_of(
                child(path, "imagePullPolicy"),
                container["imagePullPolicy"],
                ("Always", "IfNotPresent", "Never"),
            )
        if "terminationMessagePolicy" in container:
            causes += one_of(
                child(path, "terminationMessagePolicy"),
                container["terminationMessagePolicy"],
                ("FallbackToLogsOnError", "File"),
            )
        return causes

    def validate_kind_update(self, new: RawObject, old: RawObject) -> list[Cause]:
        if _mutable_masked(new.get("spec")) != _mutable_masked(old.get("spec")):
            return [forbidden("spec", POD_UPDATE_FORBIDDEN)]
        new_tolerations = dig(new, "spec", "tolerations") or []
        removed = [t for t in dig(old, "spec", "tolerations") or [] if t not in new_tolerations]
        if removed:
            return [
                forbidden(
                    "spec.tolerations",
                    "existing toleration can not be modified except its tolerationSeconds",
                )
            ]
        return []

    def validate_status(self, obj: RawObject) -> list[Cause]:
        causes: list[Cause] = []
        status = sub(obj, "status") or {}
        if "phase" in status:
            causes += one_of(
                "status.phase",
                status["phase"],
                ("Failed", "Pending", "Running", "Succeeded", "Unknown"),
            )
        for field in ("podIPs", "hostIPs"):
            for i, item in dicts(status.get(field)):
                if isinstance(item.get("ip"), str):
                    causes += validate_ip(child(index(f"status.{field}", i), "ip"), item["ip"])
        return causes

    def kind_fields(self, obj: RawObject) -> dict[str, str]:
        host_network = dig(obj, "spec", "hostNetwork") is True
        return {
            "spec.nodeName": text(dig(obj, "spec", "nodeName")),
            "spec.restartPolicy": text(dig(obj, "spec", "restartPolicy")),
            "spec.schedulerName": text(dig(obj, "spec", "schedulerName")),
            "spec.serviceAccountName": text(dig(obj, "spec", "serviceAccountName")),
            "spec.hostNetwork": "true" if host_network else "false",
            "status.phase": text(dig(obj, "status", "phase")),
            "status.podIP": text(dig(obj, "status", "podIP")),
            "status.nominatedNodeName": text(dig(obj, "status", "nominatedNodeName")),
        }

    columns = (
        NAME_COLUMN,
        Column(
            "Ready",
            lambda obj, now: pod_summary(obj, now)[0],
            description="The aggregate readiness state of this pod for accepting traffic.",
        ),
        Column(
            "Status",
            lambda obj, now: pod_summary(obj, now)[1],
            description="The aggregate status of the containers in this pod.",
        ),
        Column(
            "Restarts",
            lambda obj, now: pod_summary(obj, now)[2],
            description="The number of container restarts, and when the last one was.",
        ),
        AGE_COLUMN,
        Column(
            "IP",
            lambda obj, now: text(dig(obj, "status", "podIP")) or "<none>",
            priority=1,
            description="IP address allocated to the pod. Routable at least within the cluster.",
        ),
        Column(
            "Node",
            lambda obj, now: text(dig(obj, "spec", "nodeName")) or "<none>",
            priority=1,
            description="Name of the Node this pod is scheduled to.",
        ),
        Column(
            "Nominated Node",
            lambda obj, now: text(dig(obj, "status", "nominatedNodeName")) or "<none>",
            priority=1,
            description="The node the pod is nominated to, while preemption is in progress.",
        ),
        Column(
            "Readiness Gates",
            lambda obj, now: readiness_gates(obj),
            priority=1,
            description="The pod's readiness gates: how many of them are satisfied.",
        ),
    )


def validate_toleration(toleration: dict[str, Any], path: str) -> list[Cause]:
    """validateTolerations: operator, effect, key and tolerationSeconds as upstream checks them."""
    causes: list[Cause] = []
    key_name = toleration.get("key")
    operator = toleration.get("operator") or "Equal"
    if isinstance(key_name, str) and key_name:
        causes += [invalid(child(path, "key"), key_name, m) for m in is_qualified_name(key_name)]
    elif operator != "Exists":
        causes.append(
            invalid(
                child(path, "operator"),
                operator,
                'operator must be Exists when `key` is empty, which means "match all values and '
                'all keys"',
            )
        )
    if toleration.get("tolerationSeconds") is not None and toleration.get("effect") != "NoExecute":
        causes.append(
            invalid(
                child(path, "effect"),
                toleration.get("effect") or "",
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            )
        )
    if operator == "Exists" and toleration.get("value"):
        causes.append(
            invalid(
                child(path, "operator"), operator, "value must be empty when `operator` is 'Exists'"
            )
        )
    elif operator not in ("Equal", "Exists"):
        causes.append(not_supported(child(path, "operator"), operator, ("Equal", "Exists")))
    if toleration.get("effect"):
        causes += one_of(
            child(path, "effect"),
            toleration["effect"],
            ("NoExecute", "NoSchedule", "PreferNoSchedule"),
        )
    return causes


def _mutable_masked(spec: Any) -> Any:
    """The spec with the fields a pod update may change blanked out."""
    if not isinstance(spec, dict):
        return spec
    masked = json.loads(json.dumps(spec))
    for field in ("containers", "initContainers"):
        for _, container in dicts(masked.get(field)):
            container.pop("image", None)
    for field in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
        masked.pop(field, None)
    return masked


def _condition_true(obj: RawObject, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for _, c in dicts(dig(obj, "status", "conditions"))
    )


def pod_summary(obj: RawObject, now: datetime) -> tuple[str, str, str]:
    """kubectl's printPod: READY (``1/1``), STATUS (phase or the container's reason), RESTARTS."""
    from apiserver.tables import age

    containers = dig(obj, "spec", "containers")
    total = len(containers) if isinstance(containers, list) else 0
    reason = text(dig(obj, "status", "phase"))
    if text(dig(obj, "status", "reason")):
        reason = text(dig(obj, "status", "reason"))
    restarts = 0
    ready = 0
    last_restart = ""
    initializing = False
    init_statuses = dicts(dig(obj, "status", "initContainerStatuses"))
    init_total = len(dig(obj, "spec", "initContainers") or [])
    for i, status in init_statuses:
        restarts += int(status.get("restartCount") or 0)
        terminated = dig(status, "state", "terminated")
        waiting = dig(status, "state", "waiting")
        if isinstance(terminated, dict) and terminated.get("exitCode") == 0:
            continue
        if isinstance(terminated, dict):
            if text(terminated.get("reason")):
                reason = "Init:" + text(terminated.get("reason"))
            elif terminated.get("signal"):
                reason = f"Init:Signal:{terminated['signal']}"
            else:
                reason = f"Init:ExitCode:{terminated.get('exitCode')}"
        elif isinstance(waiting, dict) and text(waiting.get("reason")) not in (
            "",
            "PodInitializing",
        ):
            reason = "Init:" + text(waiting.get("reason"))
        else:
            reason = f"Init:{i}/{init_total}"
        initializing = True
        break
    if not initializing or _condition_true(obj, "Initialized"):
        restarts = 0
        has_running = False
        for _, status in reversed(dicts(dig(obj, "status", "containerStatuses"))):
            restarts += int(status.get("restartCount") or 0)
            finished = dig(status, "lastState", "terminated", "finishedAt")
            if isinstance(finished, str) and finished > last_restart:
                last_restart = finished
            waiting = dig(status, "state", "waiting")
            terminated = dig(status, "state", "terminated")
            if isinstance(waiting, dict) and text(waiting.get("reason")):
                reason = text(waiting.get("reason"))
            elif isinstance(terminated, dict) and text(terminated.get("reason")):
                reason = text(terminated.get("reason"))
            elif isinstance(terminated, dict):
                if terminated.get("signal"):
                    reason = f"Signal:{terminated['signal']}"
                else:
                    reason = f"ExitCode:{terminated.get('exitCode')}"
            elif status.get("ready") and dig(status, "state", "running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(obj, "Ready") else "NotReady"
    if dig(obj, "metadata", "deletionTimestamp"):
        reason = "Unknown" if text(dig(obj, "status", "reason")) == "NodeLost" else "Terminating"
    restarts_text = str(restarts)
    if last_restart:
        restarts_text = f"{restarts} ({age(last_restart, now)} ago)"
    return f"{ready}/{total}", reason, restarts_text


def readiness_gates(obj: RawObject) -> str:
    gates = dicts(dig(obj, "spec", "readinessGates"))
    if not gates:
        return "<none>"
    true = sum(1 for _, gate in gates if _condition_true(obj, text(gate.get("conditionType"))))
    return f"{true}/{len(gates)}"
