"""The registry: Kubernetes REST rules between the HTTP layer and storage.

One generic store for every kind (built-in or from a CRD); what differs per kind is its
:class:`~apiserver.strategy.Strategy` (defaulting, validation, update rules, field
selector fields) and its :class:`~apiserver.resources.Resource` (scope, subresources).

Keys: ``/registry/<plural>/<namespace>/<name>`` for the core group and
``/registry/<group>/<plural>/<namespace>/<name>`` otherwise (cluster-scoped kinds have
no namespace segment). Storage errors become a Status exactly once, via
:func:`apiserver.errors.from_storage`; the registry raises only :class:`StatusError`.

Write path (create/update/patch/delete): decode -> defaults (strategy) -> admission
mutate -> validation (metadata + strategy) -> admission validate -> store. Updates are
read-compute-compare-and-swap, retried on a race unless the client gave a
resourceVersion precondition (then a stale one is 409 Conflict). Nothing is stored when
any step fails.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from apiserver import errors
from apiserver.admission_seam import (
    Admission,
    AdmissionDenied,
    AdmissionRequest,
    NoAdmission,
    Operation,
)
from apiserver.encoding import clone
from apiserver.errors import StatusCause, StatusError
from apiserver.resources import Resource, ResourceIndex
from apiserver.storage.interface import (
    AlreadyExists,
    Conflict,
    NotFound,
    Storage,
    StorageError,
    UpdateFn,
)
from apiserver.strategy import Strategy, decode_error, strategy_for, unknown_fields
from apiserver.watch import CacheEntry, Subscriber, WatchClosed, WatchFilter, WatchHub

logger = logging.getLogger(__name__)

RawObject = dict[str, Any]
FieldValidation = Literal["Strict", "Warn", "Ignore"]

BOOTSTRAP_NAMESPACES = ("default", "kube-system")
UNDELETABLE_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
MAX_CAS_ATTEMPTS = 16
GENERATE_NAME_ATTEMPTS = 8
_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_random = random.Random()


_stamp: tuple[int, str] = (-1, "")


def now_rfc3339() -> str:
    """The current time as metadata timestamps carry it (whole seconds, UTC), formatted
    once per second: strftime cost more than the rest of a create's metadata."""
    global _stamp
    second = int(time.time())
    if second != _stamp[0]:
        _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _stamp[1]


@dataclass(slots=True)
class ListResult:
    items: list[RawObject]
    revision: int
    cont: str = ""
    remaining: int | None = None
    entries: list[CacheEntry] | None = None
    """The same items as watch-cache entries (their JSON pre-serialised), when cached."""


@dataclass(slots=True)
class WriteResult:
    obj: RawObject
    warnings: list[str]
    created: bool = False
    """create: the object is new (201)."""
    gone: bool = True
    """delete: the object is gone now (200), rather than waiting on finalizers (202)."""


@dataclass(slots=True)
class WatchStart:
    """What a watch sends first (``initial``: synthetic ADDED objects) and then follows."""

    subscriber: Subscriber
    prefix: str
    initial: list[RawObject]
    initial_revision: int


ObjectMatcher = Callable[[RawObject], bool]
# Aliases for annotations inside Registry, whose ``list`` method shadows the builtin.
StrList = list[str]
AnyList = list[Any]
ObjList = list[RawObject]


class Registry:
    def __init__(
        self,
        storage: Storage,
        index: ResourceIndex,
        *,
        admission: Admission | None = None,
        hub: WatchHub | None = None,
    ) -> None:
        self.storage = storage
        self.index = index
        self.admission: Admission = admission or NoAdmission()
        self.hub = hub or WatchHub(storage)
        self._strategies: dict[tuple[str, str], Strategy] = {}
        self.namespaces = NamespaceCache()
        self._field_sets: dict[int, _LastFieldSet] = {}

    # -- seams for custom resources -------------------------------------------------

    def set_strategy(self, resource: Resource, strategy: Strategy) -> None:
        """Serve ``resource`` (e.g. a CRD's kind) with ``strategy`` instead of the default."""
        self._strategies[(resource.group, resource.kind)] = strategy

    def remove_strategy(self, resource: Resource) -> None:
        self._strategies.pop((resource.group, resource.kind), None)

    def strategy(self, resource: Resource) -> Strategy:
        found = self._strategies.get((resource.group, resource.kind))
        return found if found is not None else strategy_for(resource)

    # -- versions of custom kinds -----------------------------------------------------

    def converter(self, resource: Resource) -> Callable[[RawObject], RawObject] | None:
        """How an object read from the store is served at ``resource``'s version: None for
        kinds with one stored apiVersion (built-ins); for custom kinds, upstream's ``None``
        conversion — only ``apiVersion`` is rewritten (on a shallow copy, never in place;
        an object already at that version is returned as it is)."""
        if getattr(self.strategy(resource), "storage_api_version", None) is None:
            return None
        wanted = resource.api_version

        def convert(obj: RawObject) -> RawObject:
            if obj.get("apiVersion") == wanted:
                return obj
            out = dict(obj)
            out["apiVersion"] = wanted
            return out

        return convert

    @staticmethod
    def _to_storage_version(strategy: Strategy, obj: RawObject) -> None:
        """Set a custom object's ``apiVersion`` to its CRD's storage version (in place)."""
        stored: str | None = getattr(strategy, "storage_api_version", None)
        if stored is not None:
            obj["apiVersion"] = stored

    # -- keys -----------------------------------------------------------------------

    @staticmethod
    def prefix(resource: Resource, namespace: str | None = None) -> str:
        base = (
            f"/registry/{resource.group}/{resource.plural}/"
            if resource.group
            else (f"/registry/{resource.plural}/")
        )
        if resource.namespaced and namespace:
            return f"{base}{namespace}/"
        return base

    @classmethod
    def key(cls, resource: Resource, namespace: str | None, name: str) -> str:
        return f"{cls.prefix(resource, namespace)}{name}"

    # -- lifecycle --------------------------------------------------------------------

    async def bootstrap(self) -> None:
        """Create the namespaces that exist on every cluster (idempotent)."""
        ns_res = self.index.lookup("", "v1", "namespaces")
        if ns_res is None:
            return
        for name in BOOTSTRAP_NAMESPACES:
            try:
                await self.storage.get(self.key(ns_res, None, name))
                continue
            except NotFound:
                pass
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            try:
                await self.create(ns_res, None, body)
                logger.info("created namespace %s", name)
            except StatusError as exc:
                if exc.code != 409:
                    raise
        await self.namespaces.start(self.hub, self.storage, self.prefix(ns_res))

    async def close(self) -> None:
        await self.namespaces.close()
        await self.hub.close()

    # -- reads --------------------------------------------------------------------------

    async def get(self, resource: Resource, namespace: str | None, name: str) -> RawObject:
        try:
            return await self.storage.get(self.key(resource, namespace, name))
        except StorageError as exc:
            raise errors.from_storage(exc, resource.plural, name, resource.group) from None

    def matcher(
        self, resource: Resource, label_selector: str = "", field_selector: str = ""
    ) -> ObjectMatcher | None:
        """A predicate for list/watch selectors (None when nothing is selected); 400 if bad."""
        if not label_selector and not field_selector:
            return None
        from apiserver.selectors import FieldSelector, LabelSelector, SelectorError

        strategy = self.strategy(resource)
        try:
            labels = LabelSelector.parse(label_selector)
            fields = FieldSelector.parse(field_selector)
            fields.validate(strategy.selectable_fields)
        except SelectorError as exc:
            raise errors.bad_request(str(exc)) from None
        if fields.empty:
            return lambda obj: labels.matches((obj.get("metadata") or {}).get("labels"))
        field_set = self._field_set_of(strategy)

        def matches(obj: RawObject) -> bool:
            if not labels.matches((obj.get("metadata") or {}).get("labels")):
                return False
            return fields.matches(field_set(obj))

        return matches

    def _field_set_of(self, strategy: Strategy) -> Callable[[RawObject], dict[str, str]]:
        """``strategy.field_set``, remembering the last object: a watch event is matched by
        every watcher in turn, and computes its fields once."""
        cache = self._field_sets.get(id(strategy))
        if cache is None or cache.strategy is not strategy:
            if len(self._field_sets) > 256:  # strategies made per call (generic kinds)
                self._field_sets.clear()
            cache = self._field_sets[id(strategy)] = _LastFieldSet(strategy)
        return cache

    async def list(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        cont: str = "",
        resource_version: str = "",
        resource_version_match: str = "",
    ) -> ListResult:
        matches = self.matcher(resource, label_selector, field_selector)
        revision = _list_revision(resource_version, resource_version_match, limit, cont)
        prefix = self.prefix(resource, namespace)
        token = _Continue.decode(cont, prefix) if cont else None
        try:
            if token is None and limit <= 0 and resource_version in ("", "0"):
                # Upstream's watch cache: "0" is any recent state, unset waits until the
                # cache has caught up with the store's current revision.
                cached = await self.hub.cached_list(
                    self.prefix(resource), prefix, matches, consistent=not resource_version
                )
                if cached is not None:
                    entries, cache_revision = cached
                    return ListResult([e.obj for e in entries], cache_revision, entries=entries)
            if token is not None:
                return await self._list_pages(
                    prefix, matches, limit, token.revision, token.storage, token.skip
                )
            return await self._list_pages(prefix, matches, limit, revision, "", 0)
        except StorageError as exc:
            raise _list_error(exc, bool(cont)) from None

    async def _list_pages(
        self,
        prefix: str,
        matches: ObjectMatcher | None,
        limit: int,
        revision: int,
        storage_cont: str,
        skip: int,
    ) -> ListResult:
        if limit <= 0 and matches is None and not storage_cont and not skip:
            page = await self.storage.list(prefix, revision=revision)
            return ListResult(page.items, page.revision)
        batch = limit + skip if matches is None and limit > 0 else max(limit, 500)
        if limit <= 0:
            batch = 0
        collected: ObjList = []
        while True:
            page = await self.storage.list(
                prefix, revision=revision, limit=batch, cont=storage_cont
            )
            revision = page.revision
            items = page.items
            for i in range(skip, len(items)):
                obj = items[i]
                if matches is not None and not matches(obj):
                    continue
                collected.append(obj)
                if limit > 0 and len(collected) >= limit:
                    rest = len(items) - i - 1
                    if rest > 0:
                        token = _Continue(prefix, revision, storage_cont, i + 1)
                    elif page.cont:
                        token = _Continue(prefix, revision, page.cont, 0)
                    else:
                        return ListResult(collected, revision)
                    remaining = None
                    if matches is None and page.remaining is not None:
                        remaining = page.remaining + rest
                    return ListResult(collected, revision, token.encode(), remaining)
            if not page.cont:
                return ListResult(collected, revision)
            storage_cont, skip = page.cont, 0

    # -- writes -------------------------------------------------------------------------

    async def create(
        self,
        resource: Resource,
        namespace: str | None,
        body: RawObject,
        *,
        dry_run: bool = False,
        field_validation: FieldValidation = "Ignore",
        owned: bool = False,
    ) -> WriteResult:
        """POST. ``body`` is left as it is unless ``owned`` (the caller's own copy, such as
        a freshly decoded request body: the registry then works on it, not a deep copy)."""
        if "create" not in resource.verbs:
            raise errors.method_not_supported(resource.plural, "create", resource.group)
        obj = body if owned else clone(body)
        warnings = self._check_body(resource, obj, namespace, field_validation)
        meta = obj["metadata"]
        name = meta.get("name") or ""
        generated = not name
        if not name:
            generate = meta.get("generateName") or ""
            if not generate:
                raise errors.invalid(
                    resource.kind,
                    "",
                    [
                        StatusCause(
                            "FieldValueRequired",
                            "Required value: name or generateName is required",
                            "metadata.name",
                        )
                    ],
                    resource.group,
                )
            name = _generated_name(generate)
            meta["name"] = name
        if resource.namespaced:
            await self._require_namespace(namespace or "")
        for field_name in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field_name, None)
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        strategy = self.strategy(resource)
        strategy.prepare_for_create(obj)
        obj = await self._mutate("CREATE", resource, obj, None, namespace, name, dry_run)
        self._validate(resource, obj, None, strategy)
        await self._admit("CREATE", resource, obj, None, namespace, name, dry_run)
        if dry_run:
            return WriteResult(obj, warnings, created=True)
        self._to_storage_version(strategy, obj)
        for _attempt in range(GENERATE_NAME_ATTEMPTS if generated else 1):
            try:
                stored = await self.storage.create(self.key(resource, namespace, name), obj)
                break
            except AlreadyExists:
                if not generated:
                    raise errors.already_exists(resource.plural, name, resource.group) from None
                # A generated name collided: draw another suffix (upstream retries too).
                name = _generated_name(meta.get("generateName") or "")
                obj["metadata"]["name"] = name
            except StorageError as exc:
                raise errors.from_storage(exc, resource.plural, name, resource.group) from None
        else:
            raise errors.already_exists(resource.plural, name, resource.group)
        logger.debug("created %s %s/%s", resource.plural, namespace or "", name)
        return WriteResult(stored, warnings, created=True)

    async def update(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: RawObject,
        *,
        subresource: str = "",
        dry_run: bool = False,
        field_validation: FieldValidation = "Ignore",
    ) -> WriteResult:
        """PUT: replace the object (or its status) with ``body``."""
        if "update" not in resource.verbs:
            raise errors.method_not_supported(resource.plural, "update", resource.group)
        new_body = clone(body)
        warnings = self._check_body(resource, new_body, namespace, field_validation)
        body_name = new_body["metadata"].get("name")
        if body_name != name:
            raise errors.bad_request(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )
        precondition = new_body["metadata"].get("resourceVersion") or None

        async def compute(current: RawObject) -> RawObject:
            return clone(new_body)

        result = await self._guaranteed_update(
            resource,
            namespace,
            name,
            compute,
            subresource=subresource,
            precondition=precondition,
            dry_run=dry_run,
        )
        result.warnings = warnings
        return result

    async def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch_type: str,
        patch: Any,
        *,
        subresource: str = "",
        dry_run: bool = False,
        field_validation: FieldValidation = "Ignore",
    ) -> WriteResult:
        """PATCH with ``json`` | ``merge`` | ``strategic`` patches, retried on races."""
        from apiserver.patch import (
            PatchError,
            apply_json_patch,
            apply_merge_patch,
            apply_strategic_merge_patch,
        )

        if "patch" not in resource.verbs:
            raise errors.method_not_supported(resource.plural, "patch", resource.group)
        warnings: StrList = []

        async def compute(current: RawObject) -> RawObject:
            try:
                if patch_type == "json":
                    patched = apply_json_patch(current, patch)
                elif patch_type == "merge":
                    patched = apply_merge_patch(current, patch)
                else:
                    patched = apply_strategic_merge_patch(current, patch, resource)
            except PatchError as exc:
                code = getattr(exc, "code", 422)
                if code == 400:
                    raise errors.bad_request(str(exc)) from None
                raise errors.unprocessable(str(exc)) from None
            if not isinstance(patched, dict):
                raise errors.unprocessable("the patch did not produce an object")
            warnings[:] = self._check_body(resource, patched, namespace, field_validation)
            meta = patched["metadata"]
            if meta.get("name") != name:
                raise errors.bad_request("metadata.name cannot be changed by a patch")
            return patched

        patch_rv = _patch_precondition(patch_type, patch)
        result = await self._guaranteed_update(
            resource,
            namespace,
            name,
            compute,
            subresource=subresource,
            precondition=patch_rv,
            dry_run=dry_run,
        )
        result.warnings = warnings
        return result

    async def _guaranteed_update(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        compute: Callable[[RawObject], Awaitable[RawObject]],
        *,
        subresource: str,
        precondition: str | None,
        dry_run: bool,
    ) -> WriteResult:
        key = self.key(resource, namespace, name)
        strategy = self.strategy(resource)
        convert = self.converter(resource)
        for _attempt in range(MAX_CAS_ATTEMPTS):
            try:
                current = await self.storage.get(key)
            except StorageError as exc:
                raise errors.from_storage(exc, resource.plural, name, resource.group) from None
            if convert is not None:
                current = convert(current)  # patched and validated at the request's version
            current_rv = current["metadata"].get("resourceVersion")
            if precondition is not None and precondition != current_rv:
                raise errors.conflict(resource.plural, name, resource.group)
            proposed = await compute(clone(current))
            new_rv = proposed["metadata"].get("resourceVersion")
            if new_rv and new_rv != current_rv:
                raise errors.conflict(resource.plural, name, resource.group)
            new = self._prepare_update(resource, strategy, proposed, current, subresource)
            new = await self._mutate(
                "UPDATE", resource, new, current, namespace, name, dry_run, subresource
            )
            self._validate(resource, new, current, strategy)
            await self._admit(
                "UPDATE", resource, new, current, namespace, name, dry_run, subresource
            )
            finishing = bool(new["metadata"].get("deletionTimestamp")) and not new["metadata"].get(
                "finalizers"
            )
            if dry_run:
                return WriteResult(new, [], gone=finishing)
            self._to_storage_version(strategy, new)
            try:
                stored = await self.storage.guaranteed_update(
                    key, _replace_with(new), expect_rv=current_rv
                )
            except Conflict:
                if precondition is not None:
                    raise errors.conflict(resource.plural, name, resource.group) from None
                continue
            except StorageError as exc:
                raise errors.from_storage(exc, resource.plural, name, resource.group) from None
            if finishing:
                return await self._finish_deletion(resource, key, name, stored)
            return WriteResult(stored, [])
        raise errors.conflict(
            resource.plural, name, resource.group, "too many concurrent writers; retry"
        )

    def _prepare_update(
        self,
        resource: Resource,
        strategy: Strategy,
        new: RawObject,
        old: RawObject,
        subresource: str,
    ) -> RawObject:
        old_meta = old["metadata"]
        if subresource == "status":
            status_only = clone(old)
            if "status" in new:
                status_only["status"] = new["status"]
            else:
                status_only.pop("status", None)
            strategy.prepare_for_status_update(status_only, old)
            return status_only
        meta = new["metadata"]
        # Fields the client may not change (upstream silently keeps the stored ones).
        for field_name in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
            if field_name in old_meta:
                meta[field_name] = old_meta[field_name]
            else:
                meta.pop(field_name, None)
        if "deletionGracePeriodSeconds" in old_meta:
            meta["deletionGracePeriodSeconds"] = old_meta["deletionGracePeriodSeconds"]
        meta["resourceVersion"] = old_meta.get("resourceVersion")
        if resource.namespaced:
            meta["namespace"] = old_meta.get("namespace")
        if "status" in resource.subresources:
            if "status" in old:
                new["status"] = clone(old["status"])
            else:
                new.pop("status", None)
        strategy.prepare_for_update(new, old)
        if new["metadata"].get("generation") == old_meta.get("generation") and _spec_of(
            new
        ) != _spec_of(old):
            new["metadata"]["generation"] = int(old_meta.get("generation") or 0) + 1
        return new

    async def _finish_deletion(
        self, resource: Resource, key: str, name: str, stored: RawObject
    ) -> WriteResult:
        """The last finalizer is gone from an object being deleted: remove it now."""
        try:
            deleted = await self.storage.delete(
                key, expect_rv=stored["metadata"].get("resourceVersion")
            )
        except (NotFound, Conflict):
            # Someone else finished (or changed) it first; what we wrote stands.
            return WriteResult(stored, [], gone=False)
        except StorageError as exc:
            raise errors.from_storage(exc, resource.plural, name, resource.group) from None
        await self._after_removal(resource, (stored["metadata"] or {}).get("namespace"))
        return WriteResult(deleted, [], gone=True)

    async def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        precondition_uid: str | None = None,
        precondition_rv: str | None = None,
        dry_run: bool = False,
    ) -> WriteResult:
        """Delete now, or mark for deletion while finalizers remain (``gone`` False)."""
        if "delete" not in resource.verbs and resource.plural != "namespaces":
            raise errors.method_not_supported(resource.plural, "delete", resource.group)
        key = self.key(resource, namespace, name)
        if resource.group == "" and resource.plural == "namespaces":
            if name in UNDELETABLE_NAMESPACES:
                raise errors.forbidden(
                    f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                    plural="namespaces",
                    name=name,
                )
        for _attempt in range(MAX_CAS_ATTEMPTS):
            try:
                current = await self.storage.get(key)
            except StorageError as exc:
                raise errors.from_storage(exc, resource.plural, name, resource.group) from None
            meta = current["metadata"]
            if precondition_uid is not None and precondition_uid != meta.get("uid"):
                raise errors.conflict(
                    resource.plural,
                    name,
                    resource.group,
                    f"Precondition failed: UID in precondition: {precondition_uid}, "
                    f"UID in object meta: {meta.get('uid')}",
                )
            if precondition_rv is not None and precondition_rv != meta.get("resourceVersion"):
                raise errors.conflict(
                    resource.plural,
                    name,
                    resource.group,
                    f"Precondition failed: ResourceVersion in precondition: {precondition_rv}, "
                    f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
                )
            await self._admit("DELETE", resource, None, current, namespace, name, dry_run)
            if resource.group == "" and resource.plural == "namespaces":
                return await self._delete_namespace(resource, key, current, dry_run)
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return WriteResult(current, [], gone=False)
                marked = clone(current)
                marked["metadata"]["deletionTimestamp"] = now_rfc3339()
                marked["metadata"]["deletionGracePeriodSeconds"] = 0
                if dry_run:
                    return WriteResult(marked, [], gone=False)
                try:
                    stored = await self.storage.guaranteed_update(
                        key, _replace_with(marked), expect_rv=meta.get("resourceVersion")
                    )
                except Conflict:
                    continue
                except StorageError as exc:
                    raise errors.from_storage(exc, resource.plural, name, resource.group) from None
                return WriteResult(stored, [], gone=False)
            if dry_run:
                return WriteResult(current, [], gone=True)
            try:
                deleted = await self.storage.delete(key, expect_rv=meta.get("resourceVersion"))
            except Conflict:
                continue
            except StorageError as exc:
                raise errors.from_storage(exc, resource.plural, name, resource.group) from None
            await self._after_removal(resource, namespace)
            return WriteResult(deleted, [], gone=True)
        raise errors.conflict(
            resource.plural, name, resource.group, "too many concurrent writers; retry"
        )

    async def delete_collection(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        dry_run: bool = False,
    ) -> ListResult:
        if "deletecollection" not in resource.verbs:
            raise errors.method_not_supported(resource.plural, "deletecollection", resource.group)
        listed = await self.list(
            resource, namespace, label_selector=label_selector, field_selector=field_selector
        )
        deleted: ObjList = []
        for obj in listed.items:
            meta = obj["metadata"]
            try:
                result = await self.delete(
                    resource, meta.get("namespace"), meta["name"], dry_run=dry_run
                )
            except StatusError as exc:
                if exc.code == 404:
                    continue
                raise
            deleted.append(result.obj)
        return ListResult(deleted, listed.revision)

    async def _delete_namespace(
        self, ns_res: Resource, key: str, current: RawObject, dry_run: bool
    ) -> WriteResult:
        """Delete what the namespace holds; the namespace goes when nothing is left (and it
        has no finalizers of its own), else it is Terminating until the last object goes."""
        name = current["metadata"]["name"]
        if dry_run:
            return WriteResult(current, [], gone=not current["metadata"].get("finalizers"))
        remaining = await self._empty_namespace(name)
        if not remaining and not current["metadata"].get("finalizers"):
            try:
                deleted = await self.storage.delete(key)
            except StorageError as exc:
                raise errors.from_storage(exc, "namespaces", name) from None
            return WriteResult(deleted, [], gone=True)

        def terminating(obj: RawObject) -> RawObject:
            meta = obj["metadata"]
            meta.setdefault("deletionTimestamp", now_rfc3339())
            meta.setdefault("deletionGracePeriodSeconds", 0)
            obj.setdefault("status", {})["phase"] = "Terminating"
            return obj

        try:
            marked = await self.storage.guaranteed_update(key, terminating)
        except StorageError as exc:
            raise errors.from_storage(exc, "namespaces", name) from None
        logger.info("namespace %s is terminating: %d object(s) wait on finalizers", name, remaining)
        # The last of them may have gone while we marked it: finish in that case.
        await self._after_removal(ns_res, None, namespace=name)
        return WriteResult(marked, [], gone=False)

    async def _empty_namespace(self, namespace: str) -> int:
        """Delete every namespaced object in ``namespace`` (the namespace controller's job);
        how many remain (held by finalizers)."""
        remaining = 0
        for resource in self.index.all():
            if not resource.namespaced:
                continue
            try:
                page = await self.storage.list(self.prefix(resource, namespace))
            except StorageError as exc:
                raise errors.from_storage(exc, "namespaces", namespace) from None
            for obj in page.items:
                try:
                    result = await self.delete(resource, namespace, obj["metadata"]["name"])
                except StatusError as exc:
                    if exc.code != 404:
                        raise
                    continue
                remaining += not result.gone
        return remaining

    async def _after_removal(
        self, resource: Resource, obj_namespace: str | None, *, namespace: str | None = None
    ) -> None:
        """An object left a Terminating namespace: the namespace goes once it is empty."""
        namespace = namespace or (obj_namespace if resource.namespaced else None)
        if not namespace:
            return
        ns_res = self.index.lookup("", "v1", "namespaces")
        if ns_res is None:
            return
        try:  # the store, not the namespace cache: a lagging cache would strand it
            ns = await self.storage.get(self.key(ns_res, None, namespace))
        except StorageError:
            return
        meta = ns["metadata"]
        if not meta.get("deletionTimestamp") or meta.get("finalizers"):
            return
        for other in self.index.all():
            if other.namespaced:
                try:
                    page = await self.storage.list(self.prefix(other, namespace), limit=1)
                except StorageError:
                    return
                if page.items:
                    return
        try:
            await self.storage.delete(
                self.key(ns_res, None, namespace), expect_rv=meta.get("resourceVersion")
            )
            logger.info("namespace %s is empty and gone", namespace)
        except (NotFound, Conflict):
            logger.debug("namespace %s went or changed meanwhile; left as it is", namespace)
        except StorageError as exc:
            logger.warning("could not remove the emptied namespace %s: %s", namespace, exc)

    async def _require_namespace(self, namespace: str) -> None:
        ns_res = self.index.lookup("", "v1", "namespaces")
        if ns_res is None:
            return
        ns = self.namespaces.get(namespace)
        if ns is None:  # not seen yet (just created?) or absent: ask the store
            try:
                ns = await self.storage.get(self.key(ns_res, None, namespace))
            except NotFound:
                raise errors.not_found("namespaces", namespace) from None
            except StorageError as exc:
                raise errors.from_storage(exc, "namespaces", namespace) from None
        if ns["metadata"].get("deletionTimestamp"):
            raise errors.forbidden(
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
                plural="namespaces",
                name=namespace,
            )

    # -- the write path's steps -------------------------------------------------------

    def _check_body(
        self,
        resource: Resource,
        obj: RawObject,
        namespace: str | None,
        field_validation: FieldValidation,
    ) -> StrList:
        """Kind, apiVersion, namespace and (Strict/Warn) unknown fields; fills the defaults."""
        if not isinstance(obj, dict):
            raise errors.bad_request("the request body must be a JSON object")
        api_version = obj.get("apiVersion")
        kind = obj.get("kind")
        if api_version is None and kind is None:
            obj["apiVersion"] = resource.api_version
            obj["kind"] = resource.kind
        elif kind != resource.kind or api_version != resource.api_version:
            raise errors.bad_request(
                f"the body of the request is {api_version or '?'} {kind or '?'}, but the URL "
                f"names {resource.api_version} {resource.kind}; send it to its own URL"
            )
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if resource.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            if namespace:
                meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if field_validation == "Ignore":
            return []
        unknown = self.unknown_fields(resource, obj)
        if not unknown:
            return []
        if field_validation == "Strict":
            detail = ", ".join(f'unknown field "{path}"' for path in unknown)
            raise errors.bad_request(
                f'{resource.kind} in version "{resource.version}" cannot be handled as a '
                f"{resource.kind}: strict decoding error: {detail}",
                [StatusCause("FieldValueInvalid", f'unknown field "{p}"', p) for p in unknown],
            )
        return [f'unknown field "{path}"' for path in unknown]

    def unknown_fields(self, resource: Resource, obj: RawObject) -> StrList:
        """Fields of ``obj`` its kind does not define (as its strategy or its model says)."""
        custom = getattr(self.strategy(resource), "unknown_fields", None)
        if custom is not None:
            found: StrList = custom(obj)
            return found
        return unknown_fields(obj, resource)

    def _validate(
        self, resource: Resource, obj: RawObject, old: RawObject | None, strategy: Strategy
    ) -> None:
        causes: AnyList = []
        causes.extend(strategy.validate(obj) if old is None else strategy.validate_update(obj, old))
        if causes:
            # A value of the wrong type is a decoding error upstream (400), not a 422.
            problem = decode_error(obj, resource)
            if problem is not None:
                raise errors.bad_request(problem)
            name = (obj.get("metadata") or {}).get("name") or ""
            raise errors.invalid(
                resource.kind, name, [_as_cause(c) for c in causes], resource.group
            )

    async def _mutate(
        self,
        op: Operation,
        resource: Resource,
        obj: RawObject,
        old: RawObject | None,
        namespace: str | None,
        name: str,
        dry_run: bool,
        subresource: str = "",
    ) -> RawObject:
        try:
            mutated = await self.admission.mutate(
                AdmissionRequest(op, resource, obj, old, namespace, name, dry_run, subresource)
            )
        except AdmissionDenied as exc:
            raise _denied(exc, resource, name) from None
        return obj if mutated is None else mutated

    async def _admit(
        self,
        op: Operation,
        resource: Resource,
        obj: RawObject | None,
        old: RawObject | None,
        namespace: str | None,
        name: str,
        dry_run: bool,
        subresource: str = "",
    ) -> None:
        try:
            await self.admission.validate(
                AdmissionRequest(op, resource, obj, old, namespace, name, dry_run, subresource)
            )
        except AdmissionDenied as exc:
            raise _denied(exc, resource, name) from None

    # -- watch ------------------------------------------------------------------------

    async def watch(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        resource_version: str = "",
        label_selector: str = "",
        field_selector: str = "",
        send_initial_events: bool | None = None,
    ) -> WatchStart:
        """Subscribe; with no (or "0") resourceVersion the current objects come first."""
        matches = self.matcher(resource, label_selector, field_selector)
        base = self.prefix(resource)
        filter_ = WatchFilter(
            self.prefix(resource, namespace), matches, (label_selector, field_selector)
        )
        initial: ObjList = []
        if resource_version in ("", "0") or send_initial_events:
            await self.hub.broadcaster(base)
            since = 0
            if resource_version not in ("", "0"):
                since = _parse_rv(resource_version)
            try:
                page = await self.storage.list(filter_.key_prefix, revision=since)
            except StorageError as exc:
                raise _list_error(exc, False) from None
            initial = [o for o in page.items if matches is None or matches(o)]
            revision = page.revision
        else:
            revision = _parse_rv(resource_version)
            if revision > self.hub.last_revision(base):
                current = await self.storage.current_revision()
                if revision > current:
                    raise errors.expired(
                        f"too large resource version: {revision}, current: {current}; re-list"
                    )
        sub = await self.hub.subscribe(base, revision, filter_)
        return WatchStart(sub, base, initial, revision)


class _LastFieldSet:
    """A strategy's field_set remembering the last two objects (by identity, holding them):
    a watch event (its object, and its previous state) is matched by every watcher in turn."""

    __slots__ = ("_entries", "strategy")

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self._entries: list[tuple[RawObject, dict[str, str]]] = []

    def __call__(self, obj: RawObject) -> dict[str, str]:
        for seen, fields in self._entries:
            if seen is obj:
                return fields
        fields = self.strategy.field_set(obj)
        self._entries = [(obj, fields), *self._entries[:1]]
        return fields


class NamespaceCache:
    """The namespaces, followed through the watch hub (upstream's NamespaceLifecycle
    admission reads a cache the same way): a create need not read its namespace from the
    store. Misses fall back to the store, so a namespace created a moment ago is found."""

    def __init__(self) -> None:
        self._known: dict[str, RawObject] = {}
        self._task: asyncio.Task[None] | None = None
        self._hub: WatchHub | None = None
        self._prefix = ""
        self._sub: Subscriber | None = None

    def get(self, name: str) -> RawObject | None:
        return self._known.get(name) if self._task is not None else None

    async def start(self, hub: WatchHub, storage: Storage, prefix: str) -> None:
        if self._task is not None:
            return
        page = await storage.list(prefix)
        self._known = {o["metadata"]["name"]: o for o in page.items}
        self._hub, self._prefix = hub, prefix
        self._sub = await hub.subscribe(prefix, page.revision, WatchFilter(prefix))
        self._task = asyncio.create_task(self._follow(self._sub), name="namespace-cache")

    async def _follow(self, sub: Subscriber) -> None:
        try:
            while True:
                for ev in await sub.next_batch(None):
                    name = ev.obj["metadata"]["name"]
                    if ev.type == "DELETED":
                        self._known.pop(name, None)
                    else:
                        self._known[name] = ev.obj
        except WatchClosed:
            logger.debug("namespace cache stopped; creates read namespaces from the store")
        finally:
            self._known = {}

    async def close(self) -> None:
        task, self._task = self._task, None
        if self._hub is not None and self._sub is not None:
            self._hub.unsubscribe(self._prefix, self._sub)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# -- helpers ------------------------------------------------------------------------------


def _generated_name(prefix: str) -> str:
    return prefix + "".join(_random.choice(_NAME_SUFFIX_ALPHABET) for _ in range(5))


_UUID_V4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID_V4_SET = (0x8000 << 48) | (4 << 76)


def new_uid() -> str:
    """A random (version 4, RFC 4122 variant) UUID, as ``str(uuid.UUID(int=n, version=4))``
    spells it, without building the UUID object. From a PRNG seeded by the OS: uids need to
    be unique, not secret, and os.urandom releases the GIL on every call, which costs a
    thread switch under load."""
    h = f"{(_random.getrandbits(128) & _UUID_V4_CLEAR) | _UUID_V4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _replace_with(obj: RawObject) -> UpdateFn:
    """A storage update function that writes ``obj`` (computed against a known revision)."""

    def update(_current: RawObject) -> RawObject:
        return obj

    return update


def _spec_of(obj: RawObject) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _as_cause(cause: Any) -> StatusCause:
    if isinstance(cause, StatusCause):
        return cause
    reason = getattr(cause, "reason", None) or getattr(cause, "type", "FieldValueInvalid")
    return StatusCause(
        str(reason), str(getattr(cause, "message", cause)), str(getattr(cause, "field", "") or "")
    )


def _denied(exc: AdmissionDenied, resource: Resource, name: str) -> StatusError:
    reason = exc.reason
    if reason is None:
        reason = {400: "BadRequest", 403: "Forbidden", 422: "Invalid"}.get(exc.code, "Forbidden")
    return StatusError(
        exc.code, reason, exc.message, name=name, group=resource.group, kind=resource.plural
    )


def _parse_rv(value: str) -> int:
    try:
        rv = int(value)
    except ValueError:
        raise errors.bad_request(f"invalid resource version: {value!r}") from None
    if rv < 0:
        raise errors.bad_request(f"invalid resource version: {value!r}")
    return rv


def _list_revision(rv: str, match: str, limit: int, cont: str) -> int:
    """The revision a list reads at (0: latest), following upstream's rules."""
    if match and match not in ("Exact", "NotOlderThan"):
        raise errors.bad_request(
            f"resourceVersionMatch: Unsupported value: {match!r}: supported values: "
            '"Exact", "NotOlderThan"'
        )
    if match and not rv:
        raise errors.bad_request(
            "resourceVersionMatch is forbidden unless resourceVersion is provided"
        )
    if cont and rv not in ("", "0"):
        raise errors.bad_request("specifying resource version is not allowed when using continue")
    if not rv or rv == "0":
        if match == "Exact" and rv == "0":
            raise errors.bad_request(
                'resourceVersionMatch "Exact" is forbidden for resourceVersion "0"'
            )
        return 0
    revision = _parse_rv(rv)
    if match == "Exact" or (not match and limit > 0):
        return revision
    return 0


def _list_error(exc: StorageError, with_continue: bool) -> StatusError:
    from apiserver.storage import interface

    if isinstance(exc, interface.Compacted):
        if with_continue:
            return errors.expired(
                "The provided continue parameter is too old to display a consistent list "
                "result. You can start a new list without the continue parameter."
            )
        return errors.expired(
            f"The resourceVersion for the provided list is too old (requested "
            f"{exc.requested}, oldest kept {exc.compacted})."
        )
    invalid_continue = getattr(interface, "InvalidContinue", None)
    if invalid_continue is not None and isinstance(exc, invalid_continue):
        return errors.bad_request("the continue parameter is invalid; start a new list")
    too_large = getattr(interface, "TooLargeRevision", None)
    if too_large is not None and isinstance(exc, too_large):
        return errors.timeout(f"Too large resource version: {exc}")
    return errors.from_storage(exc, "", "")


def _patch_precondition(patch_type: str, patch: Any) -> str | None:
    """A merge/strategic patch carrying metadata.resourceVersion is a precondition."""
    if patch_type in ("merge", "strategic") and isinstance(patch, dict):
        meta = patch.get("metadata")
        if isinstance(meta, dict):
            rv = meta.get("resourceVersion")
            if isinstance(rv, str) and rv:
                return rv
    return None


@dataclass(frozen=True, slots=True)
class _Continue:
    """The registry's continue token: a storage page start plus items to skip in it."""

    prefix: str
    revision: int
    storage: str
    skip: int

    def encode(self) -> str:
        raw = json.dumps(
            {"p": self.prefix, "r": self.revision, "s": self.storage, "k": self.skip},
            separators=(",", ":"),
        )
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, prefix: str) -> _Continue:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            found = cls(str(data["p"]), int(data["r"]), str(data["s"]), int(data["k"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise errors.bad_request(
                "the continue parameter is invalid; start a new list"
            ) from None
        if found.prefix != prefix:
            raise errors.bad_request("the continue parameter belongs to another list")
        return found
