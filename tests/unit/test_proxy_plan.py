"""The plan from actual to desired IPVS state (pure) and its apply on the fake backend."""

from __future__ import annotations

import random

import pytest

from proxy.desired import ProxyConfig
from proxy.fake import FakeBackend
from proxy.plan import (
    AddDestination,
    AddService,
    ApplyError,
    BindAddress,
    DeleteDestination,
    DeleteService,
    EditDestination,
    EditService,
    UnbindAddress,
    apply,
    plan,
    record,
)
from proxy.state import (
    DestinationSpec,
    IpvsState,
    RealServer,
    Service,
    ServiceSpec,
    Touched,
    VirtualServer,
)

OWNS = ProxyConfig.from_strings(["10.96.0.0/12"]).owns
VS = VirtualServer("10.96.0.10", 80, "TCP")
RS1 = RealServer("10.2.16.5", 12345)
RS2 = RealServer("10.2.16.6", 12345)
MASQ = DestinationSpec()


def state(*services: tuple[VirtualServer, Service], addresses: set[str] | None = None) -> IpvsState:
    return IpvsState(dict(services), set(addresses or set()))


def web(
    *destinations: RealServer, spec: ServiceSpec | None = None
) -> tuple[VirtualServer, Service]:
    return VS, Service(spec or ServiceSpec(), {rs: MASQ for rs in destinations})


def converge(desired: IpvsState, actual: IpvsState) -> IpvsState:
    backend = FakeBackend(actual)
    apply(plan(desired, backend.read_state(), OWNS), backend)
    return backend.read_state()


def test_from_empty_the_service_and_destinations_come_before_the_vip_is_bound() -> None:
    desired = state(web(RS1), addresses={"10.96.0.10"})
    assert plan(desired, IpvsState(), OWNS) == [
        AddService(VS, ServiceSpec("rr", 0)),
        AddDestination(VS, RS1, MASQ),
        BindAddress("10.96.0.10"),
    ]


def test_a_second_plan_after_apply_is_empty() -> None:
    desired = state(web(RS1, RS2), addresses={"10.96.0.10"})
    assert plan(desired, converge(desired, IpvsState()), OWNS) == []


def test_a_changed_scheduler_or_affinity_is_edited_in_place() -> None:
    actual = state(web(RS1), addresses={"10.96.0.10"})
    desired = state(web(RS1, spec=ServiceSpec("rr", 10800)), addresses={"10.96.0.10"})
    assert plan(desired, actual, OWNS) == [EditService(VS, ServiceSpec("rr", 10800))]


def test_endpoint_changes_add_edit_and_delete_destinations_only() -> None:
    actual = state(
        (VS, Service(ServiceSpec(), {RS1: MASQ, RS2: DestinationSpec(1, "route")})),
        addresses={"10.96.0.10"},
    )
    rs3 = RealServer("10.2.16.7", 12345)
    desired = state((VS, Service(ServiceSpec(), {RS2: MASQ, rs3: MASQ})), addresses={"10.96.0.10"})
    assert plan(desired, actual, OWNS) == [
        DeleteDestination(VS, RS1),
        EditDestination(VS, RS2, MASQ),
        AddDestination(VS, rs3, MASQ),
    ]


def test_a_removed_service_is_deleted_and_its_vip_unbound_after_the_additions() -> None:
    other = VirtualServer("10.96.0.20", 53, "UDP")
    actual = state(web(RS1), addresses={"10.96.0.10"})
    desired = state((other, Service(ServiceSpec())), addresses={"10.96.0.20"})
    assert plan(desired, actual, OWNS) == [
        AddService(other, ServiceSpec()),
        BindAddress("10.96.0.20"),
        DeleteService(VS),
        UnbindAddress("10.96.0.10"),
    ]


def test_foreign_services_and_addresses_outside_the_cidr_are_never_touched() -> None:
    foreign = VirtualServer("192.168.1.1", 80, "TCP")
    actual = state(
        (foreign, Service(ServiceSpec("wlc"), {RS1: DestinationSpec(5, "route")})),
        addresses={"192.168.1.1"},
    )
    assert plan(IpvsState(), actual, OWNS) == []
    result = converge(state(web(RS1), addresses={"10.96.0.10"}), actual)
    assert result.services[foreign] == actual.services[foreign]
    assert "192.168.1.1" in result.addresses


def test_a_touched_plan_looks_only_at_what_changed() -> None:
    stale = VirtualServer("10.96.0.30", 80, "TCP")
    actual = state((stale, Service(ServiceSpec())), addresses={"10.96.0.30"})
    desired = state(web(RS1), addresses={"10.96.0.10"})
    touched = Touched(frozenset({VS}), frozenset({"10.96.0.10"}))
    assert plan(desired, actual, OWNS, touched) == [
        AddService(VS, ServiceSpec()),
        AddDestination(VS, RS1, MASQ),
        BindAddress("10.96.0.10"),
    ]


def test_apply_goes_on_after_a_failure_and_reports_every_failed_operation() -> None:
    backend = FakeBackend(state(web(), addresses=set()))
    other = VirtualServer("10.96.0.20", 80, "TCP")
    ops = [
        AddService(VS, ServiceSpec()),  # exists already: EEXIST
        AddDestination(VS, RS1, MASQ),  # the service exists, so this one works
        AddService(other, ServiceSpec("no-such-scheduler")),
        AddDestination(other, RS1, MASQ),  # its service is not there: ESRCH
        BindAddress("10.96.0.10"),
    ]
    with pytest.raises(ApplyError) as info:
        apply(ops, backend)
    assert [op for op, _ in info.value.failed] == [ops[0], ops[2], ops[3]]
    assert info.value.applied == [ops[1], ops[4]]
    assert "File exists" in str(info.value)
    assert backend.read_state().addresses == {"10.96.0.10"}


def test_record_plays_a_plan_like_the_backend_does() -> None:
    desired = state(web(RS1, RS2), addresses={"10.96.0.10"})
    actual = state(
        (VirtualServer("10.96.0.30", 80, "TCP"), Service(ServiceSpec(), {RS1: MASQ})),
        addresses={"10.96.0.30"},
    )
    ops = plan(desired, actual, OWNS)
    assert record(actual.copy(), ops) == converge(desired, actual)


def _random_state(rng: random.Random) -> IpvsState:
    out = IpvsState()
    for _ in range(rng.randint(0, 6)):
        address = rng.choice(["10.96.0.1", "10.96.0.2", "10.96.0.3", "192.168.0.1"])
        vs = VirtualServer(address, rng.choice([53, 80]), rng.choice(["TCP", "UDP"]))
        spec = ServiceSpec(rng.choice(["rr", "wrr"]), rng.choice([0, 60]))
        destinations = {
            RealServer(f"10.2.16.{rng.randint(1, 4)}", 8080): DestinationSpec(
                rng.choice([0, 1]), rng.choice(["masq", "route"])
            )
            for _ in range(rng.randint(0, 3))
        }
        out.services[vs] = Service(spec, destinations)
        if rng.random() < 0.8:
            out.addresses.add(address)
    out.addresses.update(rng.sample(["10.96.0.9", "172.16.0.1"], rng.randint(0, 2)))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_plan_after_apply_is_empty_for_random_states(seed: int) -> None:
    rng = random.Random(seed)
    desired = _random_state(rng)
    desired.services = {vs: s for vs, s in desired.services.items() if OWNS(vs.address)}
    desired.addresses = {a for a in desired.addresses if OWNS(a)}
    actual = _random_state(rng)
    result = converge(desired, actual)
    assert plan(desired, result, OWNS) == []
    foreign = {vs: s for vs, s in actual.services.items() if not OWNS(vs.address)}
    assert {vs: s for vs, s in result.services.items() if not OWNS(vs.address)} == foreign


# ------------------------------------------------------------------ graceful termination


def test_a_removed_tcp_destination_with_connections_is_drained_at_weight_zero() -> None:
    actual = state(web(RS1, RS2), addresses={"10.96.0.10"})
    actual.connections[VS, RS2] = 3
    desired = state(web(RS1), addresses={"10.96.0.10"})
    assert plan(desired, actual, OWNS) == [EditDestination(VS, RS2, DestinationSpec(0, "masq"))]


def test_a_draining_destination_waits_then_goes_when_its_connections_are_gone() -> None:
    desired = state(web(RS1), addresses={"10.96.0.10"})
    draining = state(
        (VS, Service(ServiceSpec(), {RS1: MASQ, RS2: DestinationSpec(0, "masq")})),
        addresses={"10.96.0.10"},
    )
    draining.connections[VS, RS2] = 1
    assert plan(desired, draining, OWNS) == []  # a plan after the drain began is empty
    draining.connections.clear()
    assert plan(desired, draining, OWNS) == [DeleteDestination(VS, RS2)]


def test_a_draining_destination_that_comes_back_gets_its_weight_back() -> None:
    draining = state(
        (VS, Service(ServiceSpec(), {RS1: DestinationSpec(0, "masq")})), addresses={"10.96.0.10"}
    )
    draining.connections[VS, RS1] = 2
    desired = state(web(RS1), addresses={"10.96.0.10"})
    assert plan(desired, draining, OWNS) == [EditDestination(VS, RS1, MASQ)]


def test_udp_destinations_and_deleted_services_do_not_drain() -> None:
    dns = VirtualServer("10.96.0.10", 53, "UDP")
    actual = state((dns, Service(ServiceSpec(), {RS1: MASQ, RS2: MASQ})), web(RS1))
    actual.connections[dns, RS2] = 5
    actual.connections[VS, RS1] = 5
    desired = state((dns, Service(ServiceSpec(), {RS1: MASQ})))
    assert plan(desired, actual, OWNS) == [DeleteDestination(dns, RS2), DeleteService(VS)]
