"""The service operator's filter for stored Services, and kopf's state kept off objects."""

from __future__ import annotations

from typing import Any, cast

import kopf

from minik8s.client import ApiClient
from operators import ipam
from operators.ipam import ParentRef
from operators.persistence import NoDiffBase, NoProgress
from operators.service_operator import ServiceAllocator

WEB = ParentRef("default", "web")
UID = "uid-web"


def allocator() -> ServiceAllocator:
    # needs_allocation makes no request: no client is needed
    return ServiceAllocator(cast(ApiClient, None), ipam.parse_service_cidr("10.96.0.0/22"))


def stored(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "7", "uid": UID},
        "spec": {"ports": [{"port": 80}], **spec},
    }


def test_a_stored_service_without_an_address_needs_one() -> None:
    assert allocator().needs_allocation(stored())


def test_headless_external_name_and_deleting_services_need_nothing() -> None:
    deleting = stored()
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not allocator().needs_allocation(stored(clusterIP="None"))
    assert not allocator().needs_allocation(stored(type="ExternalName"))
    assert not allocator().needs_allocation(deleting)


def test_an_address_claimed_for_the_service_needs_nothing_more() -> None:
    body = stored(clusterIP="10.96.0.9")
    mine = ipam.Holder(WEB, UID)
    assert not allocator().needs_allocation(body, {"10.96.0.9": [mine]})
    hinted = allocator()
    hinted.in_use.add("10.96.0.9", mine)
    assert not hinted.needs_allocation(body)
    made_here = allocator()
    made_here.known_claims["10.96.0.9"] = UID
    assert not made_here.needs_allocation(body)


def test_an_address_without_a_claim_or_claimed_for_another_needs_the_allocator() -> None:
    body = stored(clusterIP="10.96.0.9")
    assert allocator().needs_allocation(body)
    other = ipam.Holder(ParentRef("default", "other"), "uid-other")
    assert allocator().needs_allocation(body, {"10.96.0.9": [other]})


def test_a_claim_of_its_name_for_another_service_object_needs_taking_over() -> None:
    """A deleted Service of the same name's claim (its release may be pending), or one
    that records no Service uid: the handler takes it over."""
    body = stored(clusterIP="10.96.0.9")
    for holder in (ipam.Holder(WEB, "uid-deleted"), ipam.Holder(WEB, None)):
        assert allocator().needs_allocation(body, {"10.96.0.9": [holder]})
        hinted = allocator()
        hinted.in_use.add("10.96.0.9", holder)
        assert hinted.needs_allocation(body)
    made_here = allocator()
    made_here.known_claims["10.96.0.9"] = "uid-deleted"
    assert made_here.needs_allocation(body)


def test_kopf_state_storages_write_nothing_and_remember_nothing() -> None:
    body = kopf.Body(cast(kopf.RawBody, stored(clusterIP="10.96.0.9")))
    patch = kopf.Patch()
    diffbase, progress = NoDiffBase(), NoProgress()

    diffbase.store(body=body, patch=patch, essence=diffbase.build(body=body))
    progress.store(key="h", record={"success": True}, body=body, patch=patch)
    progress.purge(key="h", body=body, patch=patch)
    progress.touch(body=body, patch=patch, value="now")

    assert not patch
    assert diffbase.fetch(body=body) is None
    assert progress.fetch(key="h", body=body) is None
