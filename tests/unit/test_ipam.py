"""ClusterIP allocation: ranges, candidates, claims through an in-memory ClaimApi."""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from operators import ipam
from operators.ipam import ClaimExists, ParentRef

WEB = ParentRef("default", "web")
OTHER = ParentRef("default", "other")


class FakeClaims:
    """IPAddress objects by name; create is atomic per name, like the API server."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.creates = 0
        self._uid = 0

    async def create_claim(self, body: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)  # let concurrent claimants interleave
        self.creates += 1
        name = body["metadata"]["name"]
        if name in self.objects:
            raise ClaimExists(name)
        self._uid += 1
        meta = {**body["metadata"], "uid": f"uid-{self._uid}", "resourceVersion": str(self._uid)}
        stored = {**body, "metadata": meta}
        self.objects[name] = stored
        return stored

    async def get_claim(self, name: str) -> dict[str, Any] | None:
        return self.objects.get(name)

    def _unchanged(self, name: str, uid: str | None, resource_version: str | None) -> bool:
        obj = self.objects.get(name)
        return not (
            obj is None
            or (uid is not None and obj["metadata"]["uid"] != uid)
            or (
                resource_version is not None
                and obj["metadata"]["resourceVersion"] != resource_version
            )
        )

    async def delete_claim(
        self, name: str, *, uid: str | None = None, resource_version: str | None = None
    ) -> bool:
        if not self._unchanged(name, uid, resource_version):
            return False
        self._uid += 1  # a store revision per write
        del self.objects[name]
        return True

    async def mark_claim(
        self, name: str, *, resource_version: str, owner_uid: str, claimed_at: str
    ) -> bool:
        if not self._unchanged(name, None, resource_version):
            return False
        self._uid += 1
        meta = self.objects[name]["metadata"]
        meta["annotations"] = {
            **(meta.get("annotations") or {}),
            ipam.OWNER_UID_ANNOTATION: owner_uid,
            ipam.CLAIMED_AT_ANNOTATION: claimed_at,
        }
        meta["resourceVersion"] = str(self._uid)
        return True


def test_ipv4_range_skips_network_and_broadcast() -> None:
    net = ipam.parse_service_cidr("10.10.0.0/29")
    ips = [str(ip) for ip in ipam.candidates(net)]
    assert ips == [f"10.10.0.{i}" for i in range(1, 7)]
    assert ipam.range_size(ipam.parse_service_cidr(ipam.DEFAULT_SERVICE_CIDR)) == 2**20 - 2


def test_candidates_start_at_the_offset_and_wrap_once_through_the_range() -> None:
    net = ipam.parse_service_cidr("10.10.0.0/29")
    ips = [str(ip) for ip in ipam.candidates(net, start=4)]
    assert ips == ["10.10.0.5", "10.10.0.6", "10.10.0.1", "10.10.0.2", "10.10.0.3", "10.10.0.4"]


def test_ipv6_range_skips_only_the_network_address() -> None:
    net = ipam.parse_service_cidr("fd00::/126")
    assert [str(ip) for ip in ipam.candidates(net)] == ["fd00::1", "fd00::2", "fd00::3"]


@pytest.mark.parametrize("text", ["10.96.0.1/12", "not-a-cidr", "10.0.0.0/32"])
def test_invalid_service_cidr_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(ipam.InvalidServiceCIDR, match=r"service CIDR .* (not valid|too small)"):
        ipam.parse_service_cidr(text)


def test_claim_body_names_the_address_and_points_at_the_service() -> None:
    body = ipam.claim_body(ipaddress.ip_address("10.96.0.12"), WEB)
    assert body["apiVersion"] == "networking.k8s.io/v1"
    assert body["kind"] == "IPAddress"
    assert body["metadata"]["name"] == "10.96.0.12"
    assert body["metadata"]["labels"] == {ipam.MANAGED_BY_LABEL: ipam.MANAGED_BY}
    assert body["spec"]["parentRef"] == {
        "group": "",
        "resource": "services",
        "namespace": "default",
        "name": "web",
    }
    assert ipam.parent_of(body) == WEB


async def test_claim_moves_to_the_next_candidate_on_already_exists() -> None:
    api = FakeClaims()
    net = ipam.parse_service_cidr("10.10.0.0/29")
    start = ipam.random_start(net, random.Random(7))
    first = next(ipam.candidates(net, start))
    await api.create_claim(ipam.claim_body(first, OTHER))
    ip = await ipam.claim_any(api, net, WEB, rng=random.Random(7))
    assert ip != first
    assert ip == list(ipam.candidates(net, start))[1]
    assert ipam.parent_of(api.objects[str(ip)]) == WEB


async def test_claim_skips_addresses_known_in_use_without_a_round_trip() -> None:
    api = FakeClaims()
    net = ipam.parse_service_cidr("10.10.0.0/29")
    order = list(ipam.candidates(net, ipam.random_start(net, random.Random(3))))
    ip = await ipam.claim_any(api, net, WEB, in_use={str(order[0])}, rng=random.Random(3))
    assert ip == order[1]
    assert api.creates == 1


async def test_exhausted_range_is_a_clear_error() -> None:
    api = FakeClaims()
    net = ipam.parse_service_cidr("10.10.0.0/30")
    assert {str(await ipam.claim_any(api, net, WEB)) for _ in range(2)} == {
        "10.10.0.1",
        "10.10.0.2",
    }
    with pytest.raises(ipam.RangeExhausted, match=r"10\.10\.0\.0/30.*--service-cidr"):
        await ipam.claim_any(api, net, WEB)


async def test_exhaustion_known_from_the_hint_makes_no_requests() -> None:
    api = FakeClaims()
    net = ipam.parse_service_cidr("10.10.0.0/30")
    with pytest.raises(ipam.RangeExhausted):
        await ipam.claim_any(api, net, WEB, in_use={"10.10.0.1", "10.10.0.2"})
    assert api.creates == 0


async def test_concurrent_claimants_get_distinct_addresses() -> None:
    api = FakeClaims()
    net = ipam.parse_service_cidr("10.10.0.0/24")
    parents = [ParentRef("default", f"s{i}") for i in range(254)]
    ips = await asyncio.gather(*(ipam.claim_any(api, net, p) for p in parents))
    assert len({str(ip) for ip in ips}) == 254
    assert {ipam.parent_of(obj) for obj in api.objects.values()} == set(parents)


async def test_requested_address_is_claimed() -> None:
    api = FakeClaims()
    net = ipam.parse_service_cidr("10.96.0.0/12")
    ip = await ipam.claim_requested(api, net, "10.96.0.10", WEB)
    assert str(ip) == "10.96.0.10"
    assert ipam.parent_of(api.objects["10.96.0.10"]) == WEB


async def test_requested_address_held_by_another_service_is_refused() -> None:
    api = FakeClaims()
    net = ipam.parse_service_cidr("10.96.0.0/12")
    await ipam.claim_requested(api, net, "10.96.0.10", OTHER)
    with pytest.raises(ipam.AddressInUse, match=r"10\.96\.0\.10 is already allocated.*other"):
        await ipam.claim_requested(api, net, "10.96.0.10", WEB)


async def test_requested_address_already_held_by_the_same_service_is_accepted() -> None:
    api = FakeClaims()
    net = ipam.parse_service_cidr("10.96.0.0/12")
    await ipam.claim_requested(api, net, "10.96.0.10", WEB)
    assert str(await ipam.claim_requested(api, net, "10.96.0.10", WEB)) == "10.96.0.10"


@pytest.mark.parametrize(
    "text", ["10.112.0.0", "10.96.0.0", "192.168.1.1", "10.111.255.255", "fd00::1"]
)
async def test_requested_address_out_of_range_is_refused(text: str) -> None:
    with pytest.raises(ipam.AddressOutOfRange, match=r"not in the service CIDR 10\.96\.0\.0/12"):
        await ipam.claim_requested(FakeClaims(), ipam.parse_service_cidr("10.96.0.0/12"), text, WEB)


async def test_requested_garbage_is_refused() -> None:
    with pytest.raises(ipam.InvalidAddress, match="not an IP address"):
        await ipam.claim_requested(FakeClaims(), ipam.parse_service_cidr("10.96.0.0/12"), "x", WEB)


async def test_release_deletes_only_the_owners_claim() -> None:
    api = FakeClaims()
    net = ipam.parse_service_cidr("10.96.0.0/12")
    await ipam.claim_requested(api, net, "10.96.0.10", OTHER)
    assert await ipam.release(api, "10.96.0.10", WEB) is False
    assert "10.96.0.10" in api.objects
    assert await ipam.release(api, "10.96.0.10", OTHER) is True
    assert api.objects == {}


async def test_release_keeps_a_claim_recorded_for_another_service_of_the_same_name() -> None:
    api = FakeClaims()
    net = ipam.parse_service_cidr("10.96.0.0/12")
    await ipam.claim_requested(api, net, "10.96.0.10", WEB, owner_uid="new")
    assert await ipam.release(api, "10.96.0.10", WEB, owner_uid="old") is False
    assert "10.96.0.10" in api.objects
    assert await ipam.release(api, "10.96.0.10", WEB, owner_uid="new") is True


async def test_a_claim_changed_since_it_was_read_is_not_deleted() -> None:
    api = FakeClaims()
    net = ipam.parse_service_cidr("10.96.0.0/12")
    await ipam.claim_requested(api, net, "10.96.0.10", WEB)
    read = copy.deepcopy(api.objects["10.96.0.10"])
    assert await ipam.mark(api, read, "new")  # taken over meanwhile
    assert await ipam.delete_exactly(api, read) is False
    assert ipam.owner_uid_of(api.objects["10.96.0.10"]) == "new"


def _claim(name: str, parent: ParentRef, age: timedelta, now: datetime) -> dict[str, Any]:
    body = ipam.claim_body(ipaddress.ip_address(name), parent)
    body["metadata"]["creationTimestamp"] = (now - age).strftime("%Y-%m-%dT%H:%M:%SZ")
    return body


def _service(parent: ParentRef, ip: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"clusterIP": ip, "clusterIPs": [ip]} if ip else {}
    return {"metadata": {"namespace": parent.namespace, "name": parent.name}, "spec": spec}


def test_sweep_finds_claims_whose_service_is_gone_or_holds_another_address() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    old = timedelta(minutes=5)
    claims = [
        _claim("10.96.0.1", WEB, old, now),  # held
        _claim("10.96.0.2", WEB, old, now),  # web holds .1, not .2: orphan
        _claim("10.96.0.3", OTHER, old, now),  # service gone: orphan
        _claim("10.96.0.4", OTHER, timedelta(seconds=2), now),  # in flight: kept
    ]
    orphans = ipam.orphaned_claims(
        claims, [_service(WEB, "10.96.0.1")], now=now, grace=timedelta(seconds=30)
    )
    assert [c["metadata"]["name"] for c in orphans] == ["10.96.0.2", "10.96.0.3"]


def test_sweep_leaves_claims_it_does_not_manage() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    foreign = _claim("10.96.0.1", WEB, timedelta(hours=1), now)
    foreign["metadata"]["labels"] = {ipam.MANAGED_BY_LABEL: "someone-else"}
    assert ipam.orphaned_claims([foreign], [], now=now, grace=timedelta(seconds=1)) == []


def test_claim_hints_track_names_and_holders() -> None:
    hints = ipam.ClaimHints()
    web, other = ipam.Holder(WEB, "w"), ipam.Holder(OTHER, "o")
    hints.add("10.96.0.1", web)
    hints.add("10.96.0.2", web)
    hints.add("10.96.0.3", None)
    assert "10.96.0.1" in hints and len(hints) == 3
    assert hints.claims_of(web) == {"10.96.0.1", "10.96.0.2"}
    assert hints.claims_of(ipam.Holder(WEB, "another")) == set()
    hints.add("10.96.0.2", other)  # re-parented (deleted and claimed again)
    assert hints.claims_of(web) == {"10.96.0.1"}
    assert hints.parent("10.96.0.2") == OTHER and hints.holder("10.96.0.2") == other
    hints.remove("10.96.0.1")
    assert hints.claims_of(web) == set() and "10.96.0.1" not in hints


def test_a_late_deletion_of_an_old_claim_leaves_the_newer_claims_hint() -> None:
    hints = ipam.ClaimHints()
    hints.add("10.96.0.1", ipam.Holder(WEB, "new"), uid="claim-2")
    hints.remove("10.96.0.1", uid="claim-1")  # the old claim's DELETED, handled last
    assert hints.holder("10.96.0.1") == ipam.Holder(WEB, "new")
    hints.remove("10.96.0.1", uid="claim-2")
    assert "10.96.0.1" not in hints


async def test_a_claim_of_the_same_name_for_another_service_object_is_taken_over() -> None:
    api = FakeClaims()
    net = ipam.parse_service_cidr("10.96.0.0/12")
    await ipam.claim_requested(api, net, "10.96.0.10", WEB, owner_uid="old")
    before = copy.deepcopy(api.objects["10.96.0.10"]["metadata"])
    now = datetime(2026, 1, 1, tzinfo=UTC)
    await ipam.claim_requested(api, net, "10.96.0.10", WEB, owner_uid="new", now=now)
    after = api.objects["10.96.0.10"]["metadata"]
    assert after["uid"] == before["uid"]  # the same object, never without a claim
    assert int(after["resourceVersion"]) > int(before["resourceVersion"])
    assert ipam.owner_uid_of(api.objects["10.96.0.10"]) == "new"
    assert ipam.claimed_at(api.objects["10.96.0.10"]) is not None
    writes = api._uid
    await ipam.claim_requested(api, net, "10.96.0.10", WEB, owner_uid="new")
    assert api._uid == writes  # already this Service's: nothing written


async def test_release_keeps_a_claim_written_after_the_services_deletion() -> None:
    api = FakeClaims()
    net = ipam.parse_service_cidr("10.96.0.0/12")
    await ipam.claim_requested(api, net, "10.96.0.10", WEB)  # revision 1
    api._uid += 1  # the Service is deleted at revision 2 ...
    deleted_at = str(api._uid)
    # ... and created again: the new one takes the claim over
    await ipam.claim_requested(api, net, "10.96.0.10", WEB, owner_uid="new")
    assert await ipam.release(api, "10.96.0.10", WEB, deleted_at=deleted_at) is False
    assert "10.96.0.10" in api.objects
    assert await ipam.release(api, "10.96.0.10", WEB, deleted_at=str(api._uid + 1)) is True


def test_a_claim_taken_over_restarts_its_grace_period() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    taken = _claim("10.96.0.1", WEB, timedelta(hours=1), now)
    taken["metadata"]["annotations"] = {
        ipam.CLAIMED_AT_ANNOTATION: (now - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    }
    assert ipam.orphaned_claims([taken], [], now=now, grace=timedelta(seconds=30)) == []
    later = now + timedelta(seconds=40)
    assert ipam.orphaned_claims([taken], [], now=later, grace=timedelta(seconds=30)) == [taken]
