"""The endpoint operator: EndpointSlices and v1 Endpoints for Services with a selector.

kopf indexes hold small views of every pod (by namespace and label pair), Service (by
name and by selector pair) and managed EndpointSlice (by Service); kopf runs no handler
before all of them are filled from the initial lists, so the first reconcile of a
Service sees all its pods. Event handlers on pods, Services and our own slices decide
which Services a change touches and reconcile them; the rules live in ``selection``.

A reconcile (one at a time per Service) computes the desired slices and Endpoints and
writes only what differs from what is stored: a cache of what this process wrote
(seeded from the slice index, corrected by slice events newer than it) saves reading
back. Slices are named by position, so two replicas compute the same names and
converge instead of duplicating.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from minik8s.client import AlreadyExists, ApiClient, ClientError, NotFound
from operators import selection
from operators.events import post_event
from operators.selection import PodView, ServiceView, Unresolved

logger = logging.getLogger(__name__)

RawObject = dict[str, Any]
ServiceKey = tuple[str, str]  # (namespace, name)
LabelKey = tuple[str, str, str]  # (namespace, label key, label value)

SLICE_API = "discovery.k8s.io/v1"
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0


def _rv(body: Mapping[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or -1)
    except ValueError:
        return -1


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def trimmed_slice(body: Mapping[str, Any]) -> RawObject:
    """What the slice index keeps of a stored slice: enough to compare and to name it."""
    meta = body.get("metadata") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "labels": dict(meta.get("labels") or {}),
            "ownerReferences": list(meta.get("ownerReferences") or []),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "addressType": body.get("addressType"),
        "endpoints": list(body.get("endpoints") or []),
        "ports": list(body.get("ports") or []),
    }


class EndpointReconciler:
    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self._locks: dict[ServiceKey, asyncio.Lock] = {}
        self.slices: dict[ServiceKey, dict[str, RawObject]] = {}
        self.endpoints: dict[ServiceKey, tuple[Any, ...]] = {}
        self.members: dict[ServiceKey, set[str]] = {}  # (ns, svc) -> pod names in it
        self.pod_services: dict[ServiceKey, set[str]] = {}  # (ns, pod) -> svc names
        self.reported: dict[ServiceKey, set[Unresolved]] = {}
        self._retries: dict[ServiceKey, asyncio.Task[None]] = {}

    def _lock(self, key: ServiceKey) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # -- what is stored ----------------------------------------------------------------

    def stored_slices(
        self, key: ServiceKey, index: kopf.Index[ServiceKey, RawObject]
    ) -> dict[str, RawObject]:
        cached = self.slices.get(key)
        if cached is None:
            cached = {s["metadata"]["name"]: s for s in index.get(key, [])}
            self.slices[key] = cached
        return cached

    def observe_slice(self, body: Mapping[str, Any], deleted: bool) -> ServiceKey | None:
        """A slice event: returns the Service to reconcile if it differs from our cache."""
        meta = body.get("metadata") or {}
        service = (meta.get("labels") or {}).get(selection.SERVICE_NAME_LABEL)
        if not service:
            return None
        key = (meta.get("namespace") or "default", service)
        cached = self.slices.get(key)
        if cached is None:
            return None  # not reconciled yet here: the index is the truth until then
        name = meta.get("name") or ""
        mine = cached.get(name)
        if deleted:
            if mine is None or _rv(mine) > _rv(body):
                return None  # we deleted it, or it was recreated since
            del cached[name]
            return key
        if mine is not None and (
            _rv(mine) >= _rv(body) or selection.slice_essence(mine) == selection.slice_essence(body)
        ):
            return None  # our own write (or an older one) coming back
        cached[name] = trimmed_slice(body)
        return key

    # -- reconcile ---------------------------------------------------------------------

    async def reconcile(self, key: ServiceKey, *indexes: Any, attempt: int = 0) -> None:
        """Reconcile one Service; on an API failure, again later (kopf does not redeliver
        an event whose handler failed, and the next event may be long in coming)."""
        try:
            await self._reconcile_once(key, *indexes)
        except ClientError as exc:
            delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2**attempt)
            logger.warning(
                "EndpointSlices of %s/%s not written (%s); retrying in %.1fs",
                key[0],
                key[1],
                exc,
                delay,
            )
            if key not in self._retries:
                self._retries[key] = asyncio.create_task(
                    self._again(key, indexes, delay, attempt + 1), name=f"reconcile {key}"
                )

    async def _again(
        self, key: ServiceKey, indexes: tuple[Any, ...], delay: float, attempt: int
    ) -> None:
        await asyncio.sleep(delay)
        self._retries.pop(key, None)
        await self.reconcile(key, *indexes, attempt=attempt)

    async def _reconcile_once(
        self,
        key: ServiceKey,
        services_by_name: kopf.Index[ServiceKey, ServiceView],
        pods_by_label: kopf.Index[LabelKey, PodView],
        slices_by_service: kopf.Index[ServiceKey, RawObject],
        endpoints_by_service: kopf.Index[ServiceKey, tuple[Any, ...]],
    ) -> None:
        async with self._lock(key):
            service = next(iter(services_by_name.get(key, [])), None)
            if service is None or not service.managed:
                await self._drop_slices(key, slices_by_service)
                return
            pods = candidate_pods(service, pods_by_label)
            desired = selection.desired_state(service, pods, trigger_time=_now())
            current = self.stored_slices(key, slices_by_service)
            changes = selection.slice_changes(desired.slices, current)
            for body in changes.create:
                await self._create_slice(key, body)
            for body in changes.update:
                await self._update_slice(key, body)
            for name in changes.delete:
                await self._delete_slice(key, name)
            if changes:
                logger.info(
                    "EndpointSlices of %s/%s: %d endpoint(s) in %d slice(s)",
                    key[0],
                    key[1],
                    sum(len(s["endpoints"]) for s in desired.slices),
                    len(desired.slices),
                )
            await self._write_endpoints(key, desired.endpoints, endpoints_by_service.get(key, ()))
            self._remember_members(key, desired.slices)
        await self._report(key, service, desired.unresolved)

    async def _create_slice(self, key: ServiceKey, body: RawObject) -> None:
        try:
            stored = await self.api.create(SLICE_API, "endpointslices", body, key[0])
        except AlreadyExists:  # another replica, or our cache was behind
            await self._update_slice(key, body)
            return
        self._cache(key, body, stored)

    async def _update_slice(self, key: ServiceKey, body: RawObject) -> None:
        patch = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
        try:
            stored = await self.api.patch(
                SLICE_API, "endpointslices", body["metadata"]["name"], patch, key[0]
            )
        except NotFound:
            await self._create_slice(key, body)
            return
        self._cache(key, body, stored)

    async def _delete_slice(self, key: ServiceKey, name: str) -> None:
        try:
            await self.api.delete(SLICE_API, "endpointslices", name, key[0])
        except NotFound:
            pass
        self.slices.get(key, {}).pop(name, None)

    def _cache(self, key: ServiceKey, body: RawObject, stored: Mapping[str, Any]) -> None:
        entry = trimmed_slice(body)
        entry["metadata"]["resourceVersion"] = (stored.get("metadata") or {}).get("resourceVersion")
        self.slices.setdefault(key, {})[body["metadata"]["name"]] = entry

    async def _write_endpoints(
        self, key: ServiceKey, body: RawObject, stored: Iterable[tuple[Any, ...]] = ()
    ) -> None:
        essence = selection.endpoints_essence(body)
        known = self.endpoints.get(key)
        if known is None:  # not written by this process yet: what is stored, if anything
            known = next(iter(stored), None)
        if known == essence:
            return
        namespace, name = key
        if known is None:
            try:
                await self.api.create("v1", "endpoints", body, namespace)
                self.endpoints[key] = essence
                return
            except AlreadyExists:
                pass
        patch = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
        try:
            await self.api.patch("v1", "endpoints", name, patch, namespace)
        except NotFound:
            await self.api.create("v1", "endpoints", body, namespace)
        self.endpoints[key] = essence

    def _remember_members(self, key: ServiceKey, slices: Iterable[RawObject]) -> None:
        namespace, service = key
        now = {e["targetRef"]["name"] for s in slices for e in s["endpoints"]}
        before = self.members.get(key, set())
        for pod in before - now:
            self.pod_services.get((namespace, pod), set()).discard(service)
        for pod in now - before:
            self.pod_services.setdefault((namespace, pod), set()).add(service)
        self.members[key] = now

    async def _report(
        self, key: ServiceKey, service: ServiceView, unresolved: list[Unresolved]
    ) -> None:
        seen = self.reported.setdefault(key, set())
        current = set(unresolved)
        involved = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service.name, "namespace": service.namespace, "uid": service.uid},
        }
        for item in sorted(current - seen, key=lambda u: (u.pod, u.port_name)):
            logger.info("%s/%s: %s", key[0], key[1], item.message())
            await post_event(
                self.api, involved, "Warning", "FailedToResolveTargetPort", item.message()
            )
        self.reported[key] = current

    async def _drop_slices(
        self, key: ServiceKey, slices_by_service: kopf.Index[ServiceKey, RawObject]
    ) -> None:
        for name in sorted(self.stored_slices(key, slices_by_service)):
            await self._delete_slice(key, name)
        self._remember_members(key, [])

    async def service_deleted(
        self, key: ServiceKey, slices_by_service: kopf.Index[ServiceKey, RawObject]
    ) -> None:
        async with self._lock(key):
            await self._drop_slices(key, slices_by_service)
            try:
                await self.api.delete("v1", "endpoints", key[1], key[0])
            except NotFound:
                pass
            self.slices.pop(key, None)
            self.endpoints.pop(key, None)
            self.members.pop(key, None)
            self.reported.pop(key, None)
        self._locks.pop(key, None)

    def services_of_pod(
        self, pod: PodView, services_by_selector: kopf.Index[LabelKey, ServiceView]
    ) -> set[str]:
        """Services a pod event can change: those selecting it now or holding it before."""
        names = set(self.pod_services.get((pod.namespace, pod.name), ()))
        labels = pod.label_map
        for k, v in pod.labels:
            for service in services_by_selector.get((pod.namespace, k, v), []):
                if selection.selector_matches(service.selector, labels):
                    names.add(service.name)
        return names


def candidate_pods(
    service: ServiceView, pods_by_label: kopf.Index[LabelKey, PodView]
) -> list[PodView]:
    """The pods of the rarest selector pair's bucket (selection filters the rest)."""
    buckets = [pods_by_label.get((service.namespace, k, v)) for k, v in service.selector]
    if not buckets or any(b is None for b in buckets):
        return []
    smallest = min((b for b in buckets if b is not None), key=len)
    return list(smallest)


def _indexes(kw: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    return (
        kw["services_by_name"],
        kw["pods_by_label"],
        kw["slices_by_service"],
        kw["endpoints_by_service"],
    )


def register(registry: kopf.OperatorRegistry, reconciler: EndpointReconciler) -> None:
    """Attach the endpoint operator's indexes and handlers to ``registry``."""

    @kopf.index("v1", "pods", id="pods_by_label", registry=registry)
    async def pods_by_label(body: kopf.Body, **_: Any) -> dict[LabelKey, PodView]:
        view = selection.pod_view(body)
        return {(view.namespace, k, v): view for k, v in view.labels}

    @kopf.index("v1", "services", id="services_by_name", registry=registry)
    async def services_by_name(body: kopf.Body, **_: Any) -> dict[ServiceKey, ServiceView]:
        view = selection.service_view(body)
        return {(view.namespace, view.name): view}

    @kopf.index("v1", "services", id="services_by_selector", registry=registry)
    async def services_by_selector(body: kopf.Body, **_: Any) -> dict[LabelKey, ServiceView]:
        view = selection.service_view(body)
        return {(view.namespace, k, v): view for k, v in view.selector}

    @kopf.index(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        id="slices_by_service",
        labels={selection.MANAGED_BY_LABEL: selection.CONTROLLER_NAME},
        registry=registry,
    )
    async def slices_by_service(body: kopf.Body, **_: Any) -> dict[ServiceKey, RawObject]:
        meta = body.get("metadata") or {}
        service = (meta.get("labels") or {}).get(selection.SERVICE_NAME_LABEL)
        if not service:
            return {}
        return {(meta.get("namespace") or "default", service): trimmed_slice(body)}

    @kopf.index(
        "v1",
        "endpoints",
        id="endpoints_by_service",
        labels={selection.SKIP_MIRROR_LABEL: "true"},
        registry=registry,
    )
    async def endpoints_by_service(body: kopf.Body, **_: Any) -> dict[ServiceKey, tuple[Any, ...]]:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "default", meta.get("name") or "")
        return {key: selection.endpoints_essence(body)}

    @kopf.on.event("v1", "services", id="follow_service", registry=registry)
    async def follow_service(body: kopf.Body, type: str | None, **kw: Any) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "default", meta.get("name") or "")
        if type == "DELETED":
            await reconciler.service_deleted(key, kw["slices_by_service"])
            return
        await reconciler.reconcile(key, *_indexes(kw))

    @kopf.on.event("v1", "pods", id="follow_pod", registry=registry)
    async def follow_pod(body: kopf.Body, **kw: Any) -> None:
        pod = selection.pod_view(body)
        for name in sorted(reconciler.services_of_pod(pod, kw["services_by_selector"])):
            await reconciler.reconcile((pod.namespace, name), *_indexes(kw))

    @kopf.on.event(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        id="follow_slice",
        labels={selection.MANAGED_BY_LABEL: selection.CONTROLLER_NAME},
        registry=registry,
    )
    async def follow_slice(body: kopf.Body, type: str | None, **kw: Any) -> None:
        meta = body.get("metadata") or {}
        service = (meta.get("labels") or {}).get(selection.SERVICE_NAME_LABEL)
        if type is None and service:
            key = (meta.get("namespace") or "default", service)
            if not kw["services_by_name"].get(key):  # listed at startup, Service gone
                await reconciler.service_deleted(key, kw["slices_by_service"])
                return
        key_changed = reconciler.observe_slice(body, deleted=type == "DELETED")
        if key_changed is not None:
            await reconciler.reconcile(key_changed, *_indexes(kw))
