"""The one asynchronous API client: raw dicts over httpx, list + watch with resume.

Every component talks to the apiserver through :class:`ApiClient`. It is deliberately
small: paths are built from ``(api_version, plural, namespace)``; objects are plain
dicts in Kubernetes wire form; errors are this module's own classes (the server's
``metav1.Status`` is kept on :attr:`ApiError.status`), never httpx's.

The one seam is the httpx transport: tests pass ``httpx.MockTransport`` (unit) or
nothing at all (a real server on loopback).

:meth:`ApiClient.list_watch` is the informer-like helper every watch consumer uses: it
lists, yields a :data:`SYNCED` marker, then watches from the list's resourceVersion,
resuming from the last version seen when a stream ends and relisting when the server
says the version is gone (HTTP 410 or an in-stream ``ERROR`` event with code 410).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import quote

import httpx

from minik8s.config import load_kubeconfig

logger = logging.getLogger(__name__)

RawObject = dict[str, Any]
PatchType = Literal["merge", "json", "strategic", "apply"]

PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}

#: The event type list_watch() yields once a (re)list has been delivered in full.
SYNCED = "SYNCED"


# --------------------------------------------------------------------------- errors


class ClientError(Exception):
    """Base of every error this client raises."""


class ApiUnreachable(ClientError):
    """The apiserver could not be reached or the connection broke (no HTTP answer)."""


class ApiError(ClientError):
    """The apiserver answered with an error; ``status`` is its ``metav1.Status``."""

    def __init__(self, status: Mapping[str, Any]) -> None:
        self.status: dict[str, Any] = dict(status)
        super().__init__(f"{self.code} {self.reason}: {self.message}")

    @property
    def code(self) -> int:
        return int(self.status.get("code") or 0)

    @property
    def reason(self) -> str:
        return str(self.status.get("reason") or "")

    @property
    def message(self) -> str:
        return str(self.status.get("message") or "")

    @property
    def details(self) -> dict[str, Any]:
        return dict(self.status.get("details") or {})


class BadRequest(ApiError):
    """400: the request was malformed."""


class Unauthorized(ApiError):
    """401."""


class Forbidden(ApiError):
    """403."""


class NotFound(ApiError):
    """404: the object (or the resource type) does not exist."""


class MethodNotAllowed(ApiError):
    """405."""


class Conflict(ApiError):
    """409: a resourceVersion or uid precondition did not hold."""


class AlreadyExists(Conflict):
    """409 with reason AlreadyExists: create() of a name that is taken."""


class Gone(ApiError):
    """410: the resourceVersion asked for has been compacted (or a continue token expired)."""


class UnsupportedMediaType(ApiError):
    """415."""


class Invalid(ApiError):
    """422: validation failed; ``details.causes`` names the fields."""


class TooManyRequests(ApiError):
    """429."""


class ServerError(ApiError):
    """5xx."""


_BY_CODE: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    410: Gone,
    415: UnsupportedMediaType,
    422: Invalid,
    429: TooManyRequests,
}


def error_from_status(status: Mapping[str, Any]) -> ApiError:
    """The ApiError subclass for a ``metav1.Status`` (by code, then reason)."""
    code = int(status.get("code") or 0)
    if code == 409 and status.get("reason") == "AlreadyExists":
        return AlreadyExists(status)
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = ServerError if code >= 500 else ApiError
    return cls(status)


def _status_from_response(response: httpx.Response, body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("kind") == "Status":
        status = dict(doc)
        status.setdefault("code", response.status_code)
        return status
    text = body.decode("utf-8", "replace").strip()[:500]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": response.status_code,
        "reason": response.reason_phrase.replace(" ", ""),
        "message": text or response.reason_phrase,
    }


# --------------------------------------------------------------------------- paths


def api_prefix(api_version: str) -> str:
    """``v1`` -> ``/api/v1``; ``apps/v1`` -> ``/apis/apps/v1``."""
    if "/" in api_version:
        return f"/apis/{api_version}"
    return f"/api/{api_version}"


def resource_path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The REST path of a collection or an object (optionally its subresource)."""
    parts = [api_prefix(api_version)]
    if namespace:
        parts += ["namespaces", quote(namespace, safe="")]
    parts.append(plural)
    if name is not None:
        if not name:
            raise ValueError(f"empty name for {plural}")
        parts.append(quote(name, safe=""))
        if subresource:
            parts.append(subresource)
    elif subresource:
        raise ValueError("a subresource needs an object name")
    return "/".join(parts)


def object_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, name) of an object; namespace is "" for cluster-scoped ones."""
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class ListPage(NamedTuple):
    items: list[RawObject]
    resource_version: str
    continue_: str


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of :meth:`ApiClient.list_watch`: ADDED/MODIFIED/DELETED or SYNCED."""

    type: str
    object: RawObject


# --------------------------------------------------------------------------- client


class ApiClient:
    """An async Kubernetes API client over raw dicts.

    Use as ``async with ApiClient.from_kubeconfig() as api: ...`` or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        verify: ssl.SSLContext | str | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        namespace: str = "default",
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "minik8s-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._headers = headers  # what every request carries (for subclasses' own senders)
        self.base_url = base_url.rstrip("/")
        self.namespace = namespace
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            verify=verify,
            transport=transport,
            timeout=httpx.Timeout(timeout),
            # The kubeconfig says where the server is; an HTTP(S)_PROXY meant for the
            # package registries must not capture requests to a loopback apiserver.
            trust_env=False,
        )

    @classmethod
    def from_kubeconfig(
        cls,
        path: Path | str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> ApiClient:
        """A client for the current context of a kubeconfig (see minik8s.config)."""
        cfg = load_kubeconfig(path)
        verify: ssl.SSLContext | str | bool = True
        if cfg.insecure_skip_tls_verify:
            verify = False
        elif cfg.certificate_authority:
            verify = ssl.create_default_context(cafile=cfg.certificate_authority)
        return cls(
            cfg.server,
            token=cfg.token,
            verify=verify,
            transport=transport,
            namespace=cfg.namespace,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ----------------------------------------------------------------- transport

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> RawObject:
        headers = {}
        content: bytes | None = None
        if body is not None:
            content = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            response = await self._http.request(
                method, path, params=params, content=content, headers=headers
            )
        except httpx.TransportError as exc:
            raise ApiUnreachable(
                f"{method} {self.base_url}{path}: {type(exc).__name__}: {exc}; "
                "is the apiserver running (minik8s up) and the kubeconfig right?"
            ) from exc
        if response.status_code >= 400:
            raise error_from_status(_status_from_response(response, response.content))
        if not response.content:
            return {}
        try:
            doc = response.json()
        except ValueError as exc:
            raise ApiError(
                {
                    "code": response.status_code,
                    "reason": "InvalidResponse",
                    "message": f"{method} {path}: response is not JSON",
                }
            ) from exc
        if not isinstance(doc, dict):
            raise ApiError(
                {
                    "code": response.status_code,
                    "reason": "InvalidResponse",
                    "message": f"{method} {path}: response is not a JSON object",
                }
            )
        return doc

    # ----------------------------------------------------------------- verbs

    async def get(
        self, api_version: str, plural: str, name: str, namespace: str | None = None
    ) -> RawObject:
        return await self._request("GET", resource_path(api_version, plural, namespace, name))

    async def list_page(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
        resource_version: str | None = None,
    ) -> ListPage:
        """One page of a list; ``continue_`` is "" on the last page."""
        params: dict[str, str] = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        if limit:
            params["limit"] = str(limit)
        if continue_:
            params["continue"] = continue_
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        doc = await self._request(
            "GET", resource_path(api_version, plural, namespace), params=params
        )
        items = list(doc.get("items") or [])
        kind = str(doc.get("kind") or "")
        if kind.endswith("List"):
            item_kind = kind[: -len("List")]
            for item in items:
                item.setdefault("apiVersion", doc.get("apiVersion") or api_version)
                item.setdefault("kind", item_kind)
        meta = doc.get("metadata") or {}
        return ListPage(
            items, str(meta.get("resourceVersion") or ""), str(meta.get("continue") or "")
        )

    async def list(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
        resource_version: str | None = None,
    ) -> tuple[list[RawObject], str]:
        """Every item (following continue tokens; ``limit`` is the page size) and the
        list's resourceVersion. Starting from ``continue_`` resumes an earlier list."""
        items: list[RawObject] = []
        token = continue_
        while True:
            page = await self.list_page(
                api_version,
                plural,
                namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                limit=limit,
                continue_=token,
                resource_version=None if token else resource_version,
            )
            items.extend(page.items)
            if not page.continue_:
                return items, page.resource_version
            token = page.continue_

    async def create(
        self,
        api_version: str,
        plural: str,
        body: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> RawObject:
        """POST to the collection (or to ``name/subresource`` when one is given)."""
        if subresource:
            name = str((body.get("metadata") or {}).get("name") or "")
            path = resource_path(api_version, plural, namespace, name, subresource)
        else:
            path = resource_path(api_version, plural, namespace)
        return await self._request("POST", path, body=dict(body))

    async def replace(
        self,
        api_version: str,
        plural: str,
        name: str,
        body: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> RawObject:
        """PUT: a full update, guarded by ``metadata.resourceVersion`` when it is set."""
        path = resource_path(api_version, plural, namespace, name, subresource)
        return await self._request("PUT", path, body=dict(body))

    async def patch(
        self,
        api_version: str,
        plural: str,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool | None = None,
    ) -> RawObject:
        """PATCH with a merge, JSON, strategic-merge or server-side-apply body."""
        try:
            content_type = PATCH_CONTENT_TYPES[patch_type]
        except KeyError:
            raise ValueError(
                f"unknown patch_type {patch_type!r}; use one of {sorted(PATCH_CONTENT_TYPES)}"
            ) from None
        params: dict[str, str] = {}
        if patch_type == "apply":
            params["fieldManager"] = field_manager or "minik8s"
        elif field_manager:
            params["fieldManager"] = field_manager
        if force is not None:
            params["force"] = "true" if force else "false"
        path = resource_path(api_version, plural, namespace, name, subresource)
        return await self._request(
            "PATCH", path, params=params, body=patch, content_type=content_type
        )

    async def delete(
        self,
        api_version: str,
        plural: str,
        name: str,
        namespace: str | None = None,
        *,
        preconditions: Mapping[str, str] | None = None,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> RawObject:
        """DELETE; ``preconditions`` may hold ``uid`` and/or ``resourceVersion``.
        Returns what the server answered (the deleted object or a Status)."""
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if preconditions:
            options["preconditions"] = dict(preconditions)
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        path = resource_path(api_version, plural, namespace, name)
        return await self._request("DELETE", path, body=options)

    # ----------------------------------------------------------------- watch

    async def watch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        allow_bookmarks: bool = True,
        timeout_seconds: int | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[tuple[str, RawObject]]:
        """Yield ``(type, object)`` for each event (ADDED, MODIFIED, DELETED, BOOKMARK)
        until the server ends the stream.

        An in-stream ``ERROR`` event is raised as its ApiError (410 -> :class:`Gone`).
        """
        params: dict[str, str] = {"watch": "true"}
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        if allow_bookmarks:
            params["allowWatchBookmarks"] = "true"
        if timeout_seconds is not None:
            params["timeoutSeconds"] = str(timeout_seconds)
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        path = resource_path(api_version, plural, namespace)
        # The stream may stay quiet for long: no read timeout beyond the server's own.
        read_timeout = None if timeout_seconds is None else timeout_seconds + self._timeout
        timeout = httpx.Timeout(self._timeout, read=read_timeout)
        try:
            async with self._http.stream("GET", path, params=params, timeout=timeout) as response:
                if response.status_code >= 400:
                    body = await response.aread()
                    raise error_from_status(_status_from_response(response, body))
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                        event_type = str(event["type"])
                        obj = event["object"]
                    except (ValueError, KeyError, TypeError) as exc:
                        raise ApiError(
                            {
                                "code": 500,
                                "reason": "InvalidWatchEvent",
                                "message": f"watch {path}: undecodable event: {exc}",
                            }
                        ) from exc
                    if event_type == "ERROR":
                        raise error_from_status(obj if isinstance(obj, dict) else {})
                    yield event_type, obj
        except httpx.TransportError as exc:
            raise ApiUnreachable(
                f"watch {self.base_url}{path}: {type(exc).__name__}: {exc}"
            ) from exc

    async def list_watch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int | None = 500,
        watch_timeout_seconds: int = 300,
        retry_delay: float = 1.0,
    ) -> AsyncIterator[WatchEvent]:
        """List, then watch from the list's version, forever; yield a consistent stream.

        - After every (re)list delivered in full: one ``WatchEvent(SYNCED, {})``.
        - A relist (after a 410, or after the server was unreachable and the version
          since expired) is turned into the changes since what was yielded before: the
          objects that vanished come out as DELETED, new ones as ADDED, changed ones as
          MODIFIED; unchanged ones are not repeated.
        - A stream that ends is resumed from the last resourceVersion seen (bookmarks
          count); connection errors are retried after ``retry_delay`` seconds.
        """
        known: dict[tuple[str, str], RawObject] = {}
        resource_version: str | None = None
        while True:
            if resource_version is None:
                try:
                    items, resource_version = await self.list(
                        api_version,
                        plural,
                        namespace,
                        label_selector=label_selector,
                        field_selector=field_selector,
                        limit=page_size,
                    )
                except (ApiUnreachable, Gone, ServerError, TooManyRequests) as exc:
                    logger.warning(
                        "list %s %s failed (%s); retrying in %.1fs",
                        api_version,
                        plural,
                        exc,
                        retry_delay,
                    )
                    await asyncio.sleep(retry_delay)
                    continue
                fresh = {object_key(item): item for item in items}
                for key, old in list(known.items()):
                    if key not in fresh:
                        del known[key]
                        yield WatchEvent("DELETED", old)
                for key, item in fresh.items():
                    previous = known.get(key)
                    known[key] = item
                    if previous is None:
                        yield WatchEvent("ADDED", item)
                    elif _rv(previous) != _rv(item):
                        yield WatchEvent("MODIFIED", item)
                yield WatchEvent(SYNCED, {})
            try:
                async for event_type, obj in self.watch(
                    api_version,
                    plural,
                    namespace,
                    resource_version=resource_version,
                    timeout_seconds=watch_timeout_seconds,
                    label_selector=label_selector,
                    field_selector=field_selector,
                ):
                    rv = _rv(obj)
                    if rv:
                        resource_version = rv
                    if event_type == "BOOKMARK":
                        continue
                    key = object_key(obj)
                    if event_type == "DELETED":
                        known.pop(key, None)
                    else:
                        known[key] = obj
                    yield WatchEvent(event_type, obj)
            except Gone:
                logger.info(
                    "watch %s %s: version %s is gone; relisting",
                    api_version,
                    plural,
                    resource_version,
                )
                resource_version = None
            except (ApiUnreachable, ServerError, TooManyRequests) as exc:
                logger.warning(
                    "watch %s %s broke (%s); resuming from %s in %.1fs",
                    api_version,
                    plural,
                    exc,
                    resource_version,
                    retry_delay,
                )
                await asyncio.sleep(retry_delay)


def _rv(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
