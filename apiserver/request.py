"""What a resource handler reads from an HTTP request, straight from the ASGI scope.

:class:`ApiRequest` is the resource endpoint's view of one request: method, path
parameters, headers and query parameters read on demand, the body. It
replaces Starlette's ``Request`` on the busy path (every create, get, list and watch),
where Starlette's headers and query multidicts were built for each request whether or not
a handler looked at them; values are exactly what Starlette would give (header values and
the query string decoded as latin-1, the last of repeated query parameters wins).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from starlette.datastructures import URL
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope

if TYPE_CHECKING:
    from apiserver.handlers import ApiState


class ApiRequest:
    """One request to a resource URL (``/api/v1/namespaces/default/services/web``)."""

    __slots__ = (
        "_accepts",
        "_headers",
        "_query",
        "method",
        "path_params",
        "receive",
        "scope",
        "state",
    )

    def __init__(
        self, scope: Scope, receive: Receive, path_params: dict[str, str], state: ApiState
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.path_params = path_params
        self.state = state
        self._query: dict[str, list[str]] | None = None
        self._headers: dict[bytes, bytes] | None = None
        self._accepts: list[tuple[str, dict[str, str]]] | None = None

    @property
    def url_path(self) -> str:
        """The path as Starlette's ``request.url.path`` gives it (for messages)."""
        return URL(scope=self.scope).path

    def header(self, name: bytes) -> str | None:
        """The first value of header ``name`` (lower case, as ASGI servers give names)."""
        if self._headers is None:
            # reversed: of repeated headers, the first is the one kept (as Starlette's get)
            self._headers = dict(reversed(list(self.scope["headers"])))
        value = self._headers.get(name)
        return None if value is None else value.decode("latin-1")

    def _parsed_query(self) -> dict[str, list[str]]:
        if self._query is None:
            self._query = {}
            raw: bytes = self.scope.get("query_string", b"")
            if raw:
                for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
                    self._query.setdefault(key, []).append(value)
        return self._query

    def query(self, name: str, default: str = "") -> str:
        """The (last) value of query parameter ``name``."""
        values = self._parsed_query().get(name)
        return values[-1] if values else default

    def query_or_none(self, name: str) -> str | None:
        values = self._parsed_query().get(name)
        return values[-1] if values else None

    def query_all(self, name: str) -> list[str]:
        return list(self._parsed_query().get(name, ()))

    def accepts(self) -> list[tuple[str, dict[str, str]]]:
        """The Accept header as (media type, params), in order (parsed once)."""
        if self._accepts is None:
            out = []
            for part in (self.header(b"accept") or "").split(","):
                pieces = [p.strip() for p in part.split(";")]
                if not pieces[0]:
                    continue
                params = {}
                for p in pieces[1:]:
                    if "=" in p:
                        k, v = p.split("=", 1)
                        params[k.strip()] = v.strip()
                out.append((pieces[0].lower(), params))
            self._accepts = out
        return self._accepts

    async def body(self, limit: int) -> bytes | None:
        """The whole body, or None as soon as it is longer than ``limit`` bytes. Raises
        Starlette's ClientDisconnect if the client goes first."""
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.request":
                chunk: bytes = message.get("body", b"")
                total += len(chunk)
                if total > limit:
                    return None
                if not message.get("more_body", False):
                    if not chunks:
                        return chunk
                    chunks.append(chunk)
                    return b"".join(chunks)
                chunks.append(chunk)
            elif message["type"] == "http.disconnect":
                raise ClientDisconnect()
