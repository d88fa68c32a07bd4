"""Serving CRDs: the CRD kind's strategy, custom objects' strategy, and the CRD controller.

* :class:`CrdStrategy` — the rules of ``customresourcedefinitions``: upstream's defaults
  and validation (:mod:`apiserver.crd`), the cleanup finalizer, and a status
  (``NamesAccepted``, ``Established``) computed on every write, so the response to a
  create already says whether the CRD is served.
* :class:`CustomObjectStrategy` — the rules of one custom kind: pruning, defaulting and
  validation against the version's ``openAPIV3Schema`` (:mod:`apiserver.schema`), the
  ``status`` subresource, ``additionalPrinterColumns`` for Tables.
* :class:`CrdController` — follows the stored CRDs (:mod:`apiserver.informer`) and keeps
  the :class:`~apiserver.resources.ResourceIndex` and the registry's strategies in step:
  an established CRD's served versions appear in discovery as soon as it is stored; a
  CRD being deleted has its objects deleted, then its finalizer removed; a deleted CRD
  disappears from discovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import weakref
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from apiserver import openapi
from apiserver.crd import (
    CRD_RESOURCE,
    CustomKind,
    CustomVersion,
    crd_status,
    custom_kind,
    default_crd,
    is_established,
    name_conflicts,
    validate_crd,
    validate_crd_update,
)
from apiserver.errors import StatusCause, StatusError
from apiserver.informer import follow, list_once
from apiserver.resources import Resource
from apiserver.schema import apply_defaults, prune, unknown_fields
from apiserver.storage.interface import NotFound, StorageError
from apiserver.strategy import GenericStrategy
from apiserver.tables import NAME_COLUMN, Column, cells, printer_columns
from apiserver.validation import Cause

if TYPE_CHECKING:
    from apiserver.registry import Registry

logger = logging.getLogger(__name__)

RawObject = dict[str, Any]
ColumnDefinitions = list[dict[str, Any]]
Rows = list[list[Any]]

CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"


def _causes(found: Sequence[StatusCause]) -> list[Cause]:
    return [Cause(c.reason, c.message, c.field) for c in found]


def _created_at(obj: RawObject, _now: datetime) -> Any:
    return (obj.get("metadata") or {}).get("creationTimestamp")


_CRD_COLUMNS = (NAME_COLUMN, Column("Created At", _created_at, type="date"))


class CrdStrategy(GenericStrategy):
    """customresourcedefinitions.apiextensions.k8s.io."""

    def __init__(self, controller: CrdController) -> None:
        super().__init__(namespaced=False, has_status=True)
        self.controller = controller

    def default(self, obj: RawObject) -> None:
        default_crd(obj)

    def prepare_for_create(self, obj: RawObject) -> None:
        super().prepare_for_create(obj)
        finalizers = obj["metadata"].setdefault("finalizers", [])
        if CLEANUP_FINALIZER not in finalizers:
            finalizers.append(CLEANUP_FINALIZER)
        obj.pop("status", None)
        obj["status"] = self.controller.status_for(obj, None)

    def prepare_for_update(self, new: RawObject, old: RawObject) -> None:
        super().prepare_for_update(new, old)
        new["status"] = self.controller.status_for(new, old)

    def validate_kind(self, obj: RawObject) -> list[Cause]:
        return _causes(validate_crd(obj))

    def validate_kind_update(self, new: RawObject, old: RawObject) -> list[Cause]:
        return _causes(validate_crd_update(new, old))

    def table(
        self, objs: Sequence[RawObject], *, wide: bool, now: datetime
    ) -> tuple[ColumnDefinitions, Rows]:
        return [c.definition() for c in _CRD_COLUMNS], cells(_CRD_COLUMNS, objs, now)


class CustomObjectStrategy(GenericStrategy):
    """The objects of one CRD, at any of its served versions."""

    def __init__(self, kind: CustomKind, controller: CrdController) -> None:
        storage = kind.versions.get(kind.storage_version)
        has_status = storage.status_subresource if storage else False
        super().__init__(namespaced=kind.namespaced, has_status=has_status)
        self.kind = kind
        self.controller = controller
        self.storage_api_version = f"{kind.group}/{kind.storage_version}"
        """What objects are stored as (upstream's ``None`` conversion: the registry rewrites
        only ``apiVersion``, to this on writes and to the request's version on reads)."""
        self._columns = {
            name: printer_columns(list(version.printer_columns))
            for name, version in kind.versions.items()
        }

    def _version(self, obj: RawObject) -> CustomVersion | None:
        api_version = str(obj.get("apiVersion") or "")
        _, _, version = api_version.rpartition("/")
        return self.kind.versions.get(version) or self.kind.versions.get(self.kind.storage_version)

    def prepare_for_create(self, obj: RawObject) -> None:
        if self.controller.terminating(self.kind.crd_name):
            raise StatusError(
                405,
                "MethodNotAllowed",
                f"create not allowed while custom resource definition "
                f"{self.kind.crd_name} is terminating",
                group=self.kind.group,
                kind=self.kind.plural,
            )
        super().prepare_for_create(obj)

    def default(self, obj: RawObject) -> None:
        version = self._version(obj)
        if version is not None and version.schema is not None:
            prune(obj, version.schema.schema)
            apply_defaults(obj, version.schema.schema)

    def default_status(self, obj: RawObject) -> None:
        self.default(obj)

    def validate_kind(self, obj: RawObject) -> list[Cause]:
        version = self._version(obj)
        if version is None or version.schema is None:
            return []
        return _causes(version.schema.validate(obj))

    def validate_status_update(self, new: RawObject, old: RawObject) -> list[Cause]:
        causes = super().validate_status_update(new, old)
        causes.extend(self.validate_kind(new))
        return causes

    def unknown_fields(self, obj: RawObject) -> list[str]:
        version = self._version(obj)
        if version is None or version.schema is None:
            return []
        return unknown_fields(obj, version.schema.schema)

    def table(
        self, objs: Sequence[RawObject], *, wide: bool, now: datetime
    ) -> tuple[ColumnDefinitions, Rows]:
        version = self._version(objs[0]) if objs else None
        name = version.resource.version if version else self.kind.storage_version
        columns = self._columns.get(name) or [NAME_COLUMN]
        return [c.definition() for c in columns], cells(columns, objs, now)


class CrdController:
    """Keeps what the apiserver serves in step with the stored CRDs."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.index = registry.index
        self._crds: dict[str, RawObject] = {}
        self._served: dict[str, CustomKind] = {}
        self._task: asyncio.Task[None] | None = None
        self._builtin = {(r.group, r.plural) for r in self.index.all()} | {
            (r.group, r.kind) for r in self.index.all()
        }
        self.index.add(CRD_RESOURCE)
        registry.set_strategy(CRD_RESOURCE, CrdStrategy(self))
        openapi.register_schema_provider(_schema_provider(weakref.ref(self)))

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Serve the stored CRDs now, then follow changes in the background."""
        prefix = self.registry.prefix(CRD_RESOURCE)
        revision = await list_once(self.registry.storage, prefix, self._resync)
        self._task = asyncio.create_task(
            follow(self.registry.storage, prefix, revision, self._on_event, self._resync),
            name="crd-controller",
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- what the strategies ask ----------------------------------------------------------

    def status_for(self, crd: RawObject, previous: RawObject | None) -> RawObject:
        conflicts = self.conflicts(crd)
        status = crd_status(crd, conflicts, previous)
        if crd["metadata"].get("deletionTimestamp"):
            status["conditions"].append(
                {
                    "type": "Terminating",
                    "status": "True",
                    "lastTransitionTime": crd["metadata"]["deletionTimestamp"],
                    "reason": "InstanceDeletionInProgress",
                    "message": "CustomResource deletion is in progress",
                }
            )
        return status

    def conflicts(self, crd: RawObject) -> list[str]:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group = spec.get("group")
        found = [
            f'"{value}" is already served by the apiserver'
            for value in (names.get("plural"), names.get("kind"))
            if value and (group, value) in self._builtin
        ]
        established = [c for c in self._crds.values() if is_established(c)]
        return found + name_conflicts(crd, established)

    def terminating(self, crd_name: str) -> bool:
        crd = self._crds.get(crd_name)
        return bool(crd and crd["metadata"].get("deletionTimestamp"))

    def schema(self, resource: Resource) -> Mapping[str, Any] | None:
        """The openAPIV3Schema of a served custom resource version (for /openapi/v3)."""
        for kind in self._served.values():
            if kind.group == resource.group and kind.plural == resource.plural:
                version = kind.versions.get(resource.version)
                if version is not None and version.schema is not None:
                    return version.schema.schema
        return None

    def served(self) -> dict[str, CustomKind]:
        return dict(self._served)

    def crds(self) -> list[RawObject]:
        return list(self._crds.values())

    # -- following the store ------------------------------------------------------------

    async def _resync(self, crds: list[RawObject]) -> None:
        present = {c["metadata"]["name"] for c in crds}
        for name in [n for n in self._crds if n not in present]:
            self._crds.pop(name, None)
            self._unserve(name)
        for crd in crds:
            await self._on_event("ADDED", crd)

    async def _on_event(self, type_: str, crd: RawObject) -> None:
        name = crd["metadata"]["name"]
        if type_ == "DELETED":
            self._crds.pop(name, None)
            self._unserve(name)
            await self._reconsider_names(crd)
            return
        self._crds[name] = crd
        if crd["metadata"].get("deletionTimestamp"):
            await self._clean_up(crd)
        elif is_established(crd):
            self._serve(crd)
        else:
            self._unserve(name)

    async def _reconsider_names(self, gone: RawObject) -> None:
        """A CRD went: others of its group refused for a name clash may be accepted now
        (rewriting one recomputes its status; the write's event serves it)."""
        group = (gone.get("spec") or {}).get("group")
        for name, crd in list(self._crds.items()):
            if (crd.get("spec") or {}).get("group") != group or is_established(crd):
                continue
            if crd["metadata"].get("deletionTimestamp") or self.conflicts(crd):
                continue
            try:
                await self.registry.update(CRD_RESOURCE, None, name, copy.deepcopy(crd))
            except StatusError as exc:
                if exc.code not in (404, 409):
                    raise
            else:
                logger.info(
                    "CRD %s: its names are accepted now that %s is gone",
                    name,
                    gone["metadata"]["name"],
                )

    def _serve(self, crd: RawObject) -> None:
        name = crd["metadata"]["name"]
        try:
            kind = custom_kind(crd)
        except (KeyError, TypeError, ValueError) as exc:
            logger.error("cannot serve CRD %s (%s); fix the CRD and apply it again", name, exc)
            return
        before = self._served.get(name)
        if before is not None:
            keep = {(r.group, r.version, r.plural) for r in kind.resources}
            for resource in before.resources:
                if (resource.group, resource.version, resource.plural) not in keep:
                    self.index.remove(resource)
        strategy = CustomObjectStrategy(kind, self)
        for resource in kind.resources:
            self.index.add(resource)
            self.registry.set_strategy(resource, strategy)
        self._served[name] = kind
        openapi.invalidate()  # the schema may have changed with no new resource
        if before is None:
            logger.info(
                "serving %s.%s (%s)", kind.plural, kind.group, ", ".join(sorted(kind.versions))
            )

    def _unserve(self, name: str) -> None:
        kind = self._served.pop(name, None)
        if kind is None:
            return
        for resource in kind.resources:
            self.index.remove(resource)
            self.registry.remove_strategy(resource)
        openapi.invalidate()
        logger.info("stopped serving %s.%s", kind.plural, kind.group)

    async def _clean_up(self, crd: RawObject) -> None:
        """Delete every object of a CRD being deleted, stop serving it, let the CRD go.

        Unlike upstream, the objects' own finalizers are not waited for: they are deleted
        from the store directly (watchers see them DELETED)."""
        name = crd["metadata"]["name"]
        if CLEANUP_FINALIZER not in (crd["metadata"].get("finalizers") or []):
            return
        kind = self._served.get(name)
        spec = crd.get("spec") or {}
        plural = ((spec.get("names") or {}).get("plural")) or ""
        resource = kind.resources[0] if kind and kind.resources else None
        storage = self.registry.storage
        deleted = 0
        if resource is not None or plural:
            prefix = (
                self.registry.prefix(resource)
                if resource is not None
                else f"/registry/{spec.get('group')}/{plural}/"
            )
            try:
                page = await storage.list(prefix)
                for obj in page.items:
                    meta = obj.get("metadata") or {}
                    key = (
                        f"{prefix}{meta['namespace']}/{meta['name']}"
                        if meta.get("namespace")
                        else f"{prefix}{meta['name']}"
                    )
                    with contextlib.suppress(NotFound):
                        await storage.delete(key)
                        deleted += 1
            except StorageError as exc:
                logger.warning(
                    "cleaning up the objects of CRD %s failed (%s); the next change to the "
                    "CRD retries",
                    name,
                    exc,
                )
                return
        # Out of discovery before the CRD goes: a client that re-reads discovery on the
        # CRD's DELETED event (kopf does) never finds the kind served but gone.
        self._unserve(name)
        body = copy.deepcopy(crd)
        body["metadata"]["finalizers"] = [
            f for f in crd["metadata"].get("finalizers") or [] if f != CLEANUP_FINALIZER
        ]
        try:
            await self.registry.update(CRD_RESOURCE, None, name, body)
        except StatusError as exc:
            if exc.code not in (404, 409):
                raise
            return  # changed meanwhile: the next event retries
        logger.info("deleted CRD %s and its %d objects", name, deleted)


def _schema_provider(
    controller: weakref.ReferenceType[CrdController],
) -> openapi.SchemaProvider:
    """openapi's schema source for one controller (a no-op once its apiserver is gone)."""

    def provide(resource: Resource) -> Mapping[str, Any] | None:
        found = controller()
        return found.schema(resource) if found is not None else None

    return provide
