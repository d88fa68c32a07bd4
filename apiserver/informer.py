"""An in-process informer over the store: list once, then follow a watch, forever.

The apiserver's own controllers (the CRD controller, the webhook configuration cache)
keep in-memory state in step with one key prefix. :func:`follow` lists the prefix, hands
every object to ``resync``, then feeds every change to ``on_event``; when the store has
compacted the revision it was watching from, it lists again (``resync`` gets the whole
current set, so deletions missed in between are seen). Reading storage directly (not
through the HTTP layer) keeps several apiservers sharing one etcd consistent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from apiserver.storage.interface import Compacted, Storage, StorageError

logger = logging.getLogger(__name__)

RawObject = dict[str, Any]
OnEvent = Callable[[str, RawObject], Awaitable[None]]
OnResync = Callable[[list[RawObject]], Awaitable[None]]

RETRY_DELAYS_S = (0.1, 0.2, 0.5, 1.0, 2.0)


async def _deliver(on_event: OnEvent, type_: str, obj: RawObject, prefix: str) -> None:
    """One event to the controller; a bug in handling it is logged, not fatal to the loop."""
    try:
        await on_event(type_, obj)
    except asyncio.CancelledError:
        raise
    except Exception:
        name = (obj.get("metadata") or {}).get("name")
        logger.exception("handling %s of %s%s failed; the next change retries", type_, prefix, name)


async def list_once(storage: Storage, prefix: str, resync: OnResync) -> int:
    """List ``prefix`` and hand the objects to ``resync``; the list's revision."""
    page = await storage.list(prefix)
    await resync(page.items)
    return page.revision


async def follow(
    storage: Storage, prefix: str, since: int, on_event: OnEvent, resync: OnResync
) -> None:
    """Follow changes under ``prefix`` after revision ``since`` until the store closes.

    A compacted revision means listing again; a store error means waiting (backing off),
    listing again and watching from there.
    """
    failures = 0
    revision = since
    relist = False
    while True:
        try:
            if relist:
                revision = await list_once(storage, prefix, resync)
                relist = False
            async for event in storage.watch(prefix, since=revision):
                await _deliver(on_event, event.type, event.obj, prefix)
                revision = event.revision
                failures = 0
            return
        except Compacted:
            logger.info("watch of %s fell behind compaction; listing again", prefix)
            relist = True
        except StorageError as exc:
            delay = RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)]
            failures += 1
            logger.warning("watch of %s failed (%s); retrying in %.1fs", prefix, exc, delay)
            relist = True
            await asyncio.sleep(delay)
