"""ApiRequest reads what Starlette's Request would, straight from the ASGI scope."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request

from apiserver.request import ApiRequest


def scope(query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/namespaces/default/services",
        "root_path": "",
        "query_string": query,
        "headers": headers or [],
        "server": ("127.0.0.1", 8080),
        "scheme": "http",
    }


def receiving(*messages: dict[str, Any]) -> Any:
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0)

    return receive


async def nothing() -> dict[str, Any]:
    raise AssertionError("no body expected")


def request(**kwargs: Any) -> ApiRequest:
    return ApiRequest(scope(**kwargs), nothing, {}, state=None)  # type: ignore[arg-type]


def test_query_parameters_are_starlettes() -> None:
    raw = b"dryRun=All&dryRun=All&labelSelector=app%3Dweb%2Ctier+in+(a)&limit=&x=1&x=2"
    ours = request(query=raw)
    theirs = Request(scope(query=raw)).query_params
    for name in ("dryRun", "labelSelector", "limit", "x", "missing"):
        assert ours.query(name) == theirs.get(name, "")
        assert ours.query_or_none(name) == theirs.get(name)
        assert ours.query_all(name) == theirs.getlist(name)


def test_headers_are_the_first_value_decoded_as_latin_1() -> None:
    ours = request(headers=[(b"accept", b"application/json"), (b"accept", b"x"), (b"x", b"\xe9")])
    assert ours.header(b"accept") == "application/json"
    assert ours.header(b"x") == "\xe9"
    assert ours.header(b"content-type") is None


def test_accept_is_parsed_in_order_with_parameters() -> None:
    accept = b"application/json;as=Table;v=v1;g=meta.k8s.io, application/YAML ,"
    assert request(headers=[(b"accept", accept)]).accepts() == [
        ("application/json", {"as": "Table", "v": "v1", "g": "meta.k8s.io"}),
        ("application/yaml", {}),
    ]


def body_of(*messages: dict[str, Any], limit: int = 10) -> bytes | None:
    req = ApiRequest(scope(), receiving(*messages), {}, state=None)  # type: ignore[arg-type]
    return asyncio.run(req.body(limit))


def test_the_body_is_its_chunks_joined() -> None:
    assert body_of({"type": "http.request", "body": b"abc"}) == b"abc"
    assert body_of({"type": "http.request"}) == b""
    chunks = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"cd"},
    ]
    assert body_of(*chunks) == b"abcd"


def test_a_body_over_the_limit_is_none_before_it_is_all_read() -> None:
    chunks = [
        {"type": "http.request", "body": b"x" * 8, "more_body": True},
        {"type": "http.request", "body": b"x" * 8, "more_body": True},
    ]  # no third message: reading on would fail
    assert body_of(*chunks) is None


def test_a_client_gone_mid_body_is_starlettes_client_disconnect() -> None:
    with pytest.raises(ClientDisconnect):
        body_of(
            {"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}
        )
