"""What only the etcd backend promises: several apiservers share one etcd."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from apiserver.storage.etcd import EtcdStorage
from apiserver.storage.interface import AlreadyExists, RawObject

pytestmark = pytest.mark.etcd


@pytest.fixture
async def pair(etcd_endpoint: str) -> AsyncIterator[tuple[EtcdStorage, EtcdStorage]]:
    prefix = f"/t-{uuid.uuid4().hex[:12]}"
    first = EtcdStorage([etcd_endpoint], prefix=prefix)
    second = EtcdStorage([etcd_endpoint], prefix=prefix)
    await first.start()
    await second.start()
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def bump(writer: str) -> Callable[[RawObject], RawObject]:
    def apply(current: RawObject) -> RawObject:
        return {**current, "data": {**current.get("data", {}), writer: "1"}}

    return apply


async def test_two_apiservers_see_each_others_writes_and_never_lose_an_update(
    pair: tuple[EtcdStorage, EtcdStorage],
) -> None:
    first, second = pair
    key = "/registry/configmaps/default/shared"
    since = await first.current_revision()
    watch = second.watch("/registry/configmaps/", since=since)
    created = await first.create(key, {"metadata": {"name": "shared"}, "data": {}})
    with pytest.raises(AlreadyExists):
        await second.create(key, {"metadata": {"name": "shared"}})
    await asyncio.gather(
        *(
            store.guaranteed_update(key, bump(f"{name}{i}"))
            for i in range(8)
            for name, store in (("a", first), ("b", second))
        )
    )
    final = await second.get(key)
    assert sorted(final["data"]) == sorted(f"{n}{i}" for i in range(8) for n in "ab")
    async with asyncio.timeout(30):
        seen = [await anext(watch) for _ in range(17)]
    assert seen[0].obj == created
    assert seen[-1].obj == final
    assert [e.revision for e in seen] == sorted({e.revision for e in seen})
