"""The operators' API client: ``minik8s.client.ApiClient`` with its requests on aiohttp.

``minik8s.client.ApiClient`` speaks httpx; its one seam is the transport. The operators
make their calls from hundreds of concurrent kopf handlers (a restart with 1,000
Services, 500 creates at once), where httpx's connection pool measured here degrades
from ~6 ms per request to seconds (150 concurrent GETs: 3 s; 700: pool timeouts), while
aiohttp, already loaded as kopf's own HTTP client, kept ~3 ms per request and 700
concurrent GETs in about a second. :class:`AiohttpTransport` moves the bytes of httpx
requests through aiohttp (watches, streamed).

httpx's client layer on top (request building, auth and redirect flows, cookies,
response wrapping) still cost ~1 ms of CPU per request: a ConfigMap create measured
1.4-1.7 ms of client CPU through ``ApiClient`` + the transport, 0.45 ms with aiohttp
alone. The ClusterIP claim is on the path of every Service create, and the endpoint
operator writes two objects per Service, so :class:`AiohttpApiClient` sends the
client's plain requests (every verb but watch) with aiohttp directly: same paths,
headers, bodies, errors.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import httpx
import orjson

from minik8s.client import ApiClient, ApiError, ApiUnreachable, RawObject, error_from_status

_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "host"})


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` that sends each request with one aiohttp session.

    ``ssl``: how the server is verified (aiohttp's ``ssl`` argument: True for the
    system's CAs, False for none, or a context); httpx's own ``verify`` does not reach
    a custom transport."""

    def __init__(self, *, limit: int = 64, ssl: ssl.SSLContext | bool = True) -> None:
        self._limit = limit
        self._ssl = ssl
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl),
                auto_decompress=False,  # httpx decodes by the Content-Encoding it sees
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout") or {}
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeouts.get("connect"), sock_read=timeouts.get("read")
        )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        body = await request.aread()
        try:
            response = await self.session().request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                timeout=timeout,
                allow_redirects=False,
            )
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout("timed out waiting for the response", request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
        return httpx.Response(
            status_code=response.status,
            headers=[
                (k, v) for k, v in response.headers.items() if k.lower() != "transfer-encoding"
            ],
            stream=_Body(response),
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class AiohttpApiClient(ApiClient):
    """``ApiClient`` whose plain requests skip httpx: aiohttp sends them (see above)."""

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
        if isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)
        self._aiohttp = AiohttpTransport(ssl=verify)
        super().__init__(
            base_url,
            token=token,
            verify=verify,
            transport=transport or self._aiohttp,
            timeout=timeout,
            namespace=namespace,
        )
        self._headers = {**self._headers, "User-Agent": "minik8s-operators"}
        self._request_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout, sock_read=timeout
        )

    async def close(self) -> None:
        await super().close()
        await self._aiohttp.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> RawObject:
        headers = self._headers
        content: bytes | None = None
        if body is not None:
            content = _encode(body)
            headers = {**headers, "Content-Type": content_type}
        try:
            async with self._aiohttp.session().request(
                method,
                self.base_url + path,
                params=params or None,
                data=content,
                headers=headers,
                timeout=self._request_timeout,
                allow_redirects=False,
            ) as response:
                status, reason, data = response.status, response.reason or "", await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ApiUnreachable(
                f"{method} {self.base_url}{path}: {type(exc).__name__}: {exc}; "
                "is the apiserver running (minik8s up) and the kubeconfig right?"
            ) from exc
        if status >= 400:
            raise error_from_status(_status(status, reason, data))
        if not data:
            return {}
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            raise ApiError(
                {
                    "code": status,
                    "reason": "InvalidResponse",
                    "message": f"{method} {path}: response is not a JSON object",
                }
            )
        return doc


def _encode(body: Any) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # what orjson refuses (e.g. integers beyond 64 bits)
        return json.dumps(body).encode()


def _status(code: int, reason: str, body: bytes) -> dict[str, Any]:
    """The ``metav1.Status`` of an error answer (made up when it sent none)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and doc.get("kind") == "Status":
        return {"code": code, **doc}
    text = body.decode("utf-8", "replace").strip()[:500]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason.replace(" ", ""),
        "message": text or reason,
    }
