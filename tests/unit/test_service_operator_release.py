"""A Service deleted and created again with its address: the old one's release must never
take the claim from the new one, whatever the order of the two operators' steps.

The cluster is an in-memory fake with the apiserver's semantics for what the operator
relies on: one revision counter for every write (resourceVersions compare), unique
names (AlreadyExists), uid and resourceVersion preconditions on delete and update. A
hook runs another actor to completion at a chosen step of the release, so each test
forces one interleaving.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from minik8s.client import ApiClient, Conflict, NotFound
from operators import ipam
from operators.ipam import ClaimExists, ParentRef
from operators.service_operator import ServiceAllocator, Sweeper

NS, NAME, IP = "default", "again", "10.96.3.201"
AGAIN = ParentRef(NS, NAME)
Hook = Callable[[], Awaitable[None]]


class FakeCluster:
    """Services and IPAddress claims on one revision counter, as the apiserver stores them.

    ``hooks[step]`` runs once, when the operator reaches ``step`` ("get_service",
    "get_claim", "delete_claim", "list_services"), before the step itself.
    """

    def __init__(self) -> None:
        self.revision = 0
        self.claims: dict[str, dict[str, Any]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.hooks: dict[str, Hook] = {}
        self._uids = 0

    async def _step(self, name: str) -> None:
        await asyncio.sleep(0)  # let concurrent actors interleave
        hook = self.hooks.pop(name, None)
        if hook is not None:
            await hook()

    def _write(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        return copy.deepcopy(obj)

    def _uid(self) -> str:
        self._uids += 1
        return f"uid-{self._uids}"

    # -- Services (what the test's client does) -----------------------------------------

    def store_service(self, ip: str) -> dict[str, Any]:
        """Store Service default/again holding ``ip`` (as the apiserver does after admission)."""
        assert (NS, NAME) not in self.services
        svc = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "namespace": NS,
                "name": NAME,
                "uid": self._uid(),
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80}]},
        }
        self.services[(NS, NAME)] = svc
        return self._write(svc)

    def delete_service(self) -> dict[str, Any]:
        """Delete it; the DELETED event's object (resourceVersion: the deletion's)."""
        svc = self.services.pop((NS, NAME))
        return self._write(svc)

    def to_admit(self, ip: str) -> dict[str, Any]:
        """The object a webhook sees on CREATE (uid assigned, not stored yet)."""
        return {
            "metadata": {"namespace": NS, "name": NAME, "uid": self._uid()},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]},
        }

    def store_admitted(self, obj: dict[str, Any]) -> dict[str, Any]:
        assert (NS, NAME) not in self.services
        svc = copy.deepcopy(obj)
        svc["spec"]["clusterIPs"] = [svc["spec"]["clusterIP"]]
        self.services[(NS, NAME)] = svc
        return self._write(svc)

    # -- the ApiClient calls the allocator makes -----------------------------------------

    async def get(self, api_version: str, plural: str, name: str, namespace: str) -> Any:
        assert (api_version, plural) == ("v1", "services")
        await self._step("get_service")
        svc = self.services.get((namespace, name))
        if svc is None:
            raise NotFound({"code": 404, "message": f'services "{name}" not found'})
        return copy.deepcopy(svc)

    async def list(self, api_version: str, plural: str, *a: Any, **kw: Any) -> Any:
        assert (api_version, plural) == ("v1", "services")
        await self._step("list_services")
        return [copy.deepcopy(s) for s in self.services.values()], str(self.revision)

    async def create(self, api_version: str, plural: str, body: Any, *a: Any) -> Any:
        assert plural == "events"
        return body

    # -- ClaimApi ------------------------------------------------------------------------

    async def create_claim(self, body: dict[str, Any]) -> dict[str, Any]:
        await self._step("create_claim")
        name = body["metadata"]["name"]
        if name in self.claims:
            raise ClaimExists(name)
        claim = copy.deepcopy(body)
        claim["metadata"]["uid"] = self._uid()
        claim["metadata"]["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.claims[name] = claim
        return self._write(claim)

    async def get_claim(self, name: str) -> dict[str, Any] | None:
        await self._step("get_claim")
        claim = self.claims.get(name)
        return copy.deepcopy(claim) if claim is not None else None

    def _check(self, name: str, uid: str | None, resource_version: str | None) -> None:
        claim = self.claims.get(name)
        if claim is None:
            raise NotFound({"code": 404, "message": name})
        if uid is not None and claim["metadata"]["uid"] != uid:
            raise Conflict({"code": 409, "message": "uid precondition"})
        if resource_version is not None and claim["metadata"]["resourceVersion"] != (
            resource_version
        ):
            raise Conflict({"code": 409, "message": "resourceVersion precondition"})

    async def delete_claim(
        self, name: str, *, uid: str | None = None, resource_version: str | None = None
    ) -> bool:
        await self._step("delete_claim")
        try:
            self._check(name, uid, resource_version)
        except (NotFound, Conflict):
            return False
        self._write(self.claims.pop(name))
        return True

    async def mark_claim(
        self, name: str, *, resource_version: str, owner_uid: str, claimed_at: str
    ) -> bool:
        await self._step("mark_claim")
        try:
            self._check(name, None, resource_version)
        except (NotFound, Conflict):
            return False
        annotations = self.claims[name]["metadata"].setdefault("annotations", {})
        annotations[ipam.OWNER_UID_ANNOTATION] = owner_uid
        annotations[ipam.CLAIMED_AT_ANNOTATION] = claimed_at
        self._write(self.claims[name])
        return True

    async def list_claims(self) -> list[dict[str, Any]]:
        await self._step("list_claims")
        return [copy.deepcopy(c) for c in self.claims.values()]


def allocator_on(cluster: FakeCluster) -> ServiceAllocator:
    allocator = ServiceAllocator(cast(ApiClient, cluster), ipam.parse_service_cidr("10.96.0.0/22"))
    allocator.claims = cast(ipam.ApiClaims, cluster)
    return allocator


async def admit(allocator: ServiceAllocator, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    assert await allocator.admit(meta["namespace"], meta["name"], obj["spec"], meta["uid"]) == [IP]


def saw_claims(
    allocator: ServiceAllocator, cluster: FakeCluster
) -> dict[str, list[ipam.Holder | None]]:
    """What the IPAddress watch has delivered so far: the hints and kopf's index."""
    index: dict[str, list[ipam.Holder | None]] = {}
    for name, claim in cluster.claims.items():
        allocator.saw_claim("ADDED", claim)
        index[name] = [ipam.holder_of(claim)]
    return index


def assert_claimed_for_the_new_service(cluster: FakeCluster) -> None:
    claim = cluster.claims.get(IP)
    assert claim is not None, f"{IP} is held by {NAME} but not claimed"
    assert ipam.parent_of(claim) == AGAIN
    assert ipam.owner_uid_of(claim) == cluster.services[(NS, NAME)]["metadata"]["uid"]


async def first_service(cluster: FakeCluster, allocator: ServiceAllocator) -> dict[str, Any]:
    """default/again admitted with IP, stored, seen, deleted: its DELETED event's object."""
    obj = cluster.to_admit(IP)
    await admit(allocator, obj)
    cluster.store_admitted(obj)
    saw_claims(allocator, cluster)
    return cluster.delete_service()


# -- admitted again (the webhook takes the claim over): every interleaving keeps it ------


@pytest.mark.parametrize("delay", range(12))
async def test_a_service_admitted_again_during_the_old_ones_release_keeps_its_claim(
    delay: int,
) -> None:
    cluster = FakeCluster()
    allocator = allocator_on(cluster)
    deleted = await first_service(cluster, allocator)

    async def create_again() -> None:
        for _ in range(delay):
            await asyncio.sleep(0)
        obj = cluster.to_admit(IP)
        await admit(allocator, obj)
        cluster.store_admitted(obj)

    await asyncio.gather(allocator.release(deleted), create_again())
    assert_claimed_for_the_new_service(cluster)


# -- stored without the webhook (its call failed, failurePolicy Ignore; --no-webhook) ---


REPLICAS = pytest.mark.parametrize("replica", ["same process", "another replica"])


def handler_of(allocator: ServiceAllocator, cluster: FakeCluster, replica: str) -> ServiceAllocator:
    """Who handles the new Service's event: the releasing process, or another replica
    (standalone mode runs every replica active) that has seen the same claims."""
    if replica == "same process":
        return allocator
    other = allocator_on(cluster)
    saw_claims(other, cluster)
    return other


@REPLICAS
async def test_release_keeps_a_claim_the_recreated_service_took_between_its_check_and_delete(
    replica: str,
) -> None:
    """The release looked for a Service of that name (none yet), the new one is stored
    and its handler finds the old claim "already its own", then the release deletes it."""
    cluster = FakeCluster()
    allocator = allocator_on(cluster)
    deleted = await first_service(cluster, allocator)
    handler = handler_of(allocator, cluster, replica)

    async def stored_meanwhile() -> None:
        svc = cluster.store_service(IP)
        await handler.allocate_stored(svc, saw_claims(handler, cluster))

    cluster.hooks["delete_claim"] = stored_meanwhile
    await allocator.release(deleted)
    assert_claimed_for_the_new_service(cluster)


@REPLICAS
async def test_a_service_stored_again_after_the_release_is_claimed_despite_stale_hints(
    replica: str,
) -> None:
    """The release deleted the old claim; the new Service's event is handled before the
    IPAddress watch reports that deletion, so every hint still shows a claim for it."""
    cluster = FakeCluster()
    allocator = allocator_on(cluster)
    deleted = await first_service(cluster, allocator)
    handler = handler_of(allocator, cluster, replica)
    index = saw_claims(handler, cluster)

    await allocator.release(deleted)
    assert IP not in cluster.claims  # released: nobody held it
    svc = cluster.store_service(IP)
    await handler.allocate_stored(svc, index)  # the watch has not caught up
    assert_claimed_for_the_new_service(cluster)


@REPLICAS
@pytest.mark.parametrize("delay", range(12))
async def test_a_service_stored_again_during_the_old_ones_release_keeps_its_claim(
    delay: int, replica: str
) -> None:
    cluster = FakeCluster()
    allocator = allocator_on(cluster)
    deleted = await first_service(cluster, allocator)
    handler = handler_of(allocator, cluster, replica)
    index = saw_claims(handler, cluster)

    async def store_again() -> None:
        for _ in range(delay):
            await asyncio.sleep(0)
        svc = cluster.store_service(IP)
        await handler.allocate_stored(svc, index)

    await asyncio.gather(allocator.release(deleted), store_again())
    assert_claimed_for_the_new_service(cluster)


# -- the sweep ---------------------------------------------------------------------------


async def test_the_sweep_keeps_an_old_claim_a_recreated_service_took_after_the_list() -> None:
    """An old claim (past the grace period) listed while no Service of its name existed;
    the Service is created again (without the webhook) and takes it before the delete."""
    cluster = FakeCluster()
    allocator = allocator_on(cluster)
    await first_service(cluster, allocator)
    cluster.claims[IP]["metadata"]["creationTimestamp"] = (
        datetime.now(UTC) - timedelta(minutes=5)
    ).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def stored_meanwhile() -> None:
        svc = cluster.store_service(IP)
        await allocator.allocate_stored(svc, {})

    cluster.hooks["delete_claim"] = stored_meanwhile
    sweeper = Sweeper(allocator, interval=1, grace=60)
    assert await sweeper.sweep_once() == []
    assert_claimed_for_the_new_service(cluster)


async def test_the_sweep_keeps_an_old_claim_taken_over_at_admission_after_the_list() -> None:
    """The webhook takes an old claim over for the new Service between the sweep's list
    of claims and its delete; the Service is stored after the sweep's last look."""
    cluster = FakeCluster()
    allocator = allocator_on(cluster)
    await first_service(cluster, allocator)
    cluster.claims[IP]["metadata"]["creationTimestamp"] = (
        datetime.now(UTC) - timedelta(minutes=5)
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    obj = cluster.to_admit(IP)

    async def admitted() -> None:
        await admit(allocator, obj)

    async def stored() -> None:
        cluster.store_admitted(obj)

    cluster.hooks["list_services"] = admitted
    cluster.hooks["delete_claim"] = stored
    sweeper = Sweeper(allocator, interval=1, grace=60)
    assert await sweeper.sweep_once() == []
    assert_claimed_for_the_new_service(cluster)


async def test_the_sweep_takes_over_a_claim_its_service_holds_for_an_older_object() -> None:
    """A Service stored without the webhook holding a deleted namesake's claim, whose
    event found no handler (it failed): the sweep's repair takes the claim over."""
    cluster = FakeCluster()
    allocator = allocator_on(cluster)
    await first_service(cluster, allocator)
    cluster.store_service(IP)
    sweeper = Sweeper(allocator, interval=1, grace=60)
    assert await sweeper.sweep_once() == []
    assert_claimed_for_the_new_service(cluster)


def test_the_deletion_of_an_old_claim_seen_late_leaves_what_is_known_of_the_new_one() -> None:
    allocator = allocator_on(FakeCluster())
    old = ipam.claim_body(ipaddress.ip_address(IP), AGAIN, "uid-old")
    old["metadata"]["uid"] = "claim-1"
    new = ipam.claim_body(ipaddress.ip_address(IP), AGAIN, "uid-new")
    new["metadata"]["uid"] = "claim-2"
    allocator.known_claims[IP] = "uid-new"  # claimed at admission
    allocator.saw_claim("ADDED", new)
    allocator.saw_claim("DELETED", old)  # kopf handles different objects concurrently
    assert allocator.in_use.holder(IP) == ipam.Holder(AGAIN, "uid-new")
    assert allocator.known_claims == {IP: "uid-new"}
    assert not allocator.needs_allocation(
        {
            "metadata": {"namespace": NS, "name": NAME, "uid": "uid-new"},
            "spec": {"clusterIP": IP},
        }
    )
