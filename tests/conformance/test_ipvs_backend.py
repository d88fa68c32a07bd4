"""One IpvsBackend suite, run on the in-memory fake and on the kernel.

The kernel parameter runs only inside user-mode-linux (``make test-kernel``, through
tests/kernel/test_ipvs_backend_kernel.py which runs this same suite there); on the host
it is skipped with the reason.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

import pytest

from proxy.desired import ProxyConfig
from proxy.fake import FakeBackend
from proxy.ipvs import IpvsBackend, IpvsError
from proxy.plan import apply, plan
from proxy.state import (
    DestinationSpec,
    IpvsState,
    RealServer,
    Service,
    ServiceSpec,
    VirtualServer,
)

IN_GUEST = bool(os.environ.get("UML_GUEST")) and os.path.exists("/proc/net/ip_vs")
NOT_IN_GUEST = "needs a kernel with IPVS and root: runs inside user-mode-linux (make test-kernel)"

VS = VirtualServer("10.96.0.10", 80, "TCP")
RS1 = RealServer("10.2.16.5", 12345)
RS2 = RealServer("10.2.16.6", 12345)
MASQ = DestinationSpec()


def make_kernel_backend() -> Iterator[IpvsBackend]:
    from proxy.ipvs import KernelBackend

    backend = KernelBackend(interface="kube-ipvs0")
    backend.flush()
    for address in backend.list_addresses():
        backend.unbind_address(address)
    try:
        yield backend
    finally:
        backend.flush()
        for address in backend.list_addresses():
            backend.unbind_address(address)
        backend.close()


@pytest.fixture(params=["fake", "kernel"])
def backend(request: pytest.FixtureRequest) -> Iterator[IpvsBackend]:
    if request.param == "fake":
        yield FakeBackend()
        return
    if not IN_GUEST:
        pytest.skip(NOT_IN_GUEST)
    yield from make_kernel_backend()


def errno_of(info: pytest.ExceptionInfo[IpvsError]) -> int | None:
    return info.value.errno


def test_the_backend_implements_the_protocol(backend: IpvsBackend) -> None:
    assert isinstance(backend, IpvsBackend)


def test_node_setup_is_idempotent_and_starts_with_no_addresses(backend: IpvsBackend) -> None:
    backend.ensure_node_setup()
    backend.ensure_node_setup()
    assert backend.list_addresses() == set()


def test_an_added_service_reads_back_with_its_scheduler(backend: IpvsBackend) -> None:
    backend.add_service(VS, ServiceSpec("rr"))
    assert backend.read_state().services[VS] == Service(ServiceSpec("rr", 0), {})


def test_persistence_reads_back_with_its_timeout(backend: IpvsBackend) -> None:
    backend.add_service(VS, ServiceSpec("rr", 10800))
    assert backend.read_state().services[VS].spec == ServiceSpec("rr", 10800)


def test_tcp_and_udp_on_one_address_and_port_are_two_services(backend: IpvsBackend) -> None:
    udp = VirtualServer(VS.address, VS.port, "UDP")
    backend.add_service(VS, ServiceSpec())
    backend.add_service(udp, ServiceSpec("wrr"))
    services = backend.read_state().services
    assert services[VS].spec.scheduler == "rr"
    assert services[udp].spec.scheduler == "wrr"


def test_editing_a_service_keeps_it_and_its_destinations(backend: IpvsBackend) -> None:
    backend.add_service(VS, ServiceSpec("rr"))
    backend.add_destination(VS, RS1, MASQ)
    backend.edit_service(VS, ServiceSpec("wrr", 60))
    assert backend.read_state().services[VS] == Service(ServiceSpec("wrr", 60), {RS1: MASQ})
    backend.edit_service(VS, ServiceSpec("rr", 0))
    assert backend.read_state().services[VS].spec == ServiceSpec("rr", 0)


def test_adding_a_service_twice_fails_with_eexist(backend: IpvsBackend) -> None:
    backend.add_service(VS, ServiceSpec())
    with pytest.raises(IpvsError) as info:
        backend.add_service(VS, ServiceSpec())
    assert errno_of(info) == errno.EEXIST


def test_an_unknown_scheduler_is_refused(backend: IpvsBackend) -> None:
    with pytest.raises(IpvsError) as info:
        backend.add_service(VS, ServiceSpec("nosuchsched"))
    assert errno_of(info) == errno.ENOENT
    assert VS not in backend.read_state().services


def test_editing_or_deleting_a_missing_service_fails_with_esrch(backend: IpvsBackend) -> None:
    with pytest.raises(IpvsError) as edit:
        backend.edit_service(VS, ServiceSpec())
    with pytest.raises(IpvsError) as delete:
        backend.delete_service(VS)
    assert errno_of(edit) == errno_of(delete) == errno.ESRCH


def test_destinations_are_added_reweighted_and_deleted(backend: IpvsBackend) -> None:
    backend.add_service(VS, ServiceSpec())
    backend.add_destination(VS, RS1, MASQ)
    backend.add_destination(VS, RS2, MASQ)
    assert backend.read_state().services[VS].destinations == {RS1: MASQ, RS2: MASQ}
    backend.edit_destination(VS, RS2, DestinationSpec(weight=0))
    backend.delete_destination(VS, RS1)
    assert backend.read_state().services[VS].destinations == {RS2: DestinationSpec(weight=0)}


def test_destination_forwarding_reads_back_as_set(backend: IpvsBackend) -> None:
    backend.add_service(VS, ServiceSpec())
    backend.add_destination(VS, RS1, DestinationSpec(2, "route"))
    assert backend.read_state().services[VS].destinations == {RS1: DestinationSpec(2, "route")}
    backend.edit_destination(VS, RS1, MASQ)
    assert backend.read_state().services[VS].destinations == {RS1: MASQ}


def test_destination_errors_carry_the_kernels_errnos(backend: IpvsBackend) -> None:
    with pytest.raises(IpvsError) as no_service:
        backend.add_destination(VS, RS1, MASQ)
    assert errno_of(no_service) == errno.ESRCH
    backend.add_service(VS, ServiceSpec())
    backend.add_destination(VS, RS1, MASQ)
    with pytest.raises(IpvsError) as twice:
        backend.add_destination(VS, RS1, MASQ)
    assert errno_of(twice) == errno.EEXIST
    with pytest.raises(IpvsError) as missing:
        backend.delete_destination(VS, RS2)
    assert errno_of(missing) == errno.ENOENT
    with pytest.raises(IpvsError) as edit_missing:
        backend.edit_destination(VS, RS2, MASQ)
    assert errno_of(edit_missing) == errno.ENOENT


def test_deleting_a_service_deletes_its_destinations(backend: IpvsBackend) -> None:
    backend.add_service(VS, ServiceSpec())
    backend.add_destination(VS, RS1, MASQ)
    backend.delete_service(VS)
    assert backend.read_state().services == {}
    backend.add_service(VS, ServiceSpec())
    assert backend.read_state().services[VS].destinations == {}


def test_addresses_are_bound_listed_and_unbound(backend: IpvsBackend) -> None:
    backend.ensure_node_setup()
    backend.bind_address("10.96.0.10")
    backend.bind_address("10.96.0.11")
    assert backend.list_addresses() == {"10.96.0.10", "10.96.0.11"}
    assert backend.read_state().addresses == {"10.96.0.10", "10.96.0.11"}
    backend.unbind_address("10.96.0.10")
    assert backend.list_addresses() == {"10.96.0.11"}


def test_address_errors_carry_the_kernels_errnos(backend: IpvsBackend) -> None:
    backend.ensure_node_setup()
    backend.bind_address("10.96.0.10")
    with pytest.raises(IpvsError) as twice:
        backend.bind_address("10.96.0.10")
    assert errno_of(twice) == errno.EEXIST
    with pytest.raises(IpvsError) as missing:
        backend.unbind_address("10.96.0.12")
    assert errno_of(missing) == errno.EADDRNOTAVAIL


def test_a_plan_applied_converges_and_leaves_foreign_services_alone(
    backend: IpvsBackend,
) -> None:
    owns = ProxyConfig.from_strings(["10.96.0.0/12"]).owns
    foreign = VirtualServer("192.168.7.1", 443, "TCP")
    backend.ensure_node_setup()
    backend.add_service(foreign, ServiceSpec("wlc"))
    backend.add_destination(foreign, RS2, DestinationSpec(3, "route"))
    backend.add_service(VirtualServer("10.96.0.99", 80, "TCP"), ServiceSpec())  # stale, ours
    backend.bind_address("10.96.0.99")
    desired = IpvsState(
        {
            VS: Service(ServiceSpec("rr", 10800), {RS1: MASQ, RS2: MASQ}),
            VirtualServer(VS.address, 53, "UDP"): Service(ServiceSpec(), {RS1: MASQ}),
        },
        {"10.96.0.10"},
    )
    apply(plan(desired, backend.read_state(), owns), backend)
    after = backend.read_state()
    assert plan(desired, after, owns) == []
    assert after.services[foreign] == Service(
        ServiceSpec("wlc"), {RS2: DestinationSpec(3, "route")}
    )
    assert set(after.services) == {foreign, *desired.services}
    assert after.addresses == {"10.96.0.10"}


def test_a_scheduler_name_too_long_for_the_kernel_is_invalid(backend: IpvsBackend) -> None:
    with pytest.raises(IpvsError) as info:
        backend.add_service(VS, ServiceSpec("a-scheduler-name-too-long"))
    assert errno_of(info) == errno.EINVAL


def test_ipv6_services_and_destinations_read_back(backend: IpvsBackend) -> None:
    vs6 = VirtualServer("fd00::10", 80, "TCP")
    rs6 = RealServer("fd00:2::5", 8080)
    try:
        backend.add_service(vs6, ServiceSpec("rr", 60))
    except IpvsError as exc:
        if exc.errno == errno.EAFNOSUPPORT:
            pytest.skip("this kernel's IPVS has no IPv6 (CONFIG_IP_VS_IPV6)")
        raise
    backend.add_destination(vs6, rs6, MASQ)
    assert backend.read_state().services[vs6] == Service(ServiceSpec("rr", 60), {rs6: MASQ})
    backend.delete_destination(vs6, rs6)
    backend.delete_service(vs6)
    assert vs6 not in backend.read_state().services
