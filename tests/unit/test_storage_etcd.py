"""The etcd backend's behaviour when etcd is not there (no etcd needed)."""

from __future__ import annotations

import pytest

from apiserver.storage.etcd import EtcdStorage
from apiserver.storage.interface import Unavailable
from tests.support.etcd import free_port


async def test_starting_without_a_reachable_etcd_is_unavailable_and_says_so() -> None:
    store = EtcdStorage([f"127.0.0.1:{free_port()}"], timeout=0.5)
    with pytest.raises(Unavailable, match="is it running"):
        await store.start()
    with pytest.raises(Unavailable):
        await store.get("/registry/pods/default/x")
    await store.close()
