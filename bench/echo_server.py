"""The apiserver benchmark's ceiling: an ASGI app that answers every request with 201 and
the request's own body, on uvicorn with the apiserver's own server settings and protocol
(``apiserver.app.server_config``) and event loop. What a create does beyond this is what
the apiserver adds.

Run by bench/apiserver.py as ``python -m bench.echo_server FD`` on a listening socket it
inherits.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

from apiserver.app import server_config  # typed for a Starlette app; any ASGI app runs
from apiserver.main import run_event_loop


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    fd = int(sys.argv[1])
    config = server_config(app, "127.0.0.1", 0, fd=fd, lifespan="off")  # type: ignore[arg-type]
    run_event_loop(uvicorn.Server(config).serve())
