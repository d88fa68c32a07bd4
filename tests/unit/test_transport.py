"""Writes a connection makes in one event-loop step leave as one write, in order."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from apiserver.transport import CoalescingTransport


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.events.append("write")

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")


def coalescing(loop: asyncio.AbstractEventLoop) -> tuple[CoalescingTransport, RecordingTransport]:
    inner = RecordingTransport()
    return CoalescingTransport(cast(Any, inner), loop), inner


def test_a_head_and_its_body_leave_in_one_write_after_the_step() -> None:
    async def main() -> list[bytes]:
        transport, inner = coalescing(asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 201 Created\r\n\r\n")
        transport.write(b'{"kind":"Service"}')
        assert inner.writes == []  # held until the loop's step ends
        await asyncio.sleep(0)
        transport.write(b"next")
        await asyncio.sleep(0)
        return inner.writes

    assert asyncio.run(main()) == [b'HTTP/1.1 201 Created\r\n\r\n{"kind":"Service"}', b"next"]


def test_close_sends_what_is_held_first() -> None:
    async def main() -> RecordingTransport:
        transport, inner = coalescing(asyncio.get_running_loop())
        transport.write(b"last words")
        transport.close()
        await asyncio.sleep(0)
        return inner

    inner = asyncio.run(main())
    assert inner.writes == [b"last words"]
    assert inner.events == ["write", "close"]


def test_abort_drops_what_is_held() -> None:
    async def main() -> RecordingTransport:
        transport, inner = coalescing(asyncio.get_running_loop())
        transport.write(b"never sent")
        transport.abort()
        await asyncio.sleep(0)
        return inner

    assert asyncio.run(main()).events == ["abort"]


def test_nothing_is_written_to_a_transport_that_is_closing() -> None:
    async def main() -> RecordingTransport:
        transport, inner = coalescing(asyncio.get_running_loop())
        transport.write(b"too late")
        inner.closing = True
        await asyncio.sleep(0)
        return inner

    assert asyncio.run(main()).writes == []
