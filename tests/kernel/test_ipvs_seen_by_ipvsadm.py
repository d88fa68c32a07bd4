"""What the kernel backend programs, as ipvsadm (an independent reader) sees it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from proxy.ipvs import KernelBackend
from proxy.state import DestinationSpec, RealServer, ServiceSpec, VirtualServer
from tests.conformance.test_ipvs_backend import make_kernel_backend


@pytest.fixture
def kernel() -> Iterator[KernelBackend]:
    for backend in make_kernel_backend():
        assert isinstance(backend, KernelBackend)
        yield backend


def ipvsadm_rules() -> set[str]:
    out = subprocess.run(["ipvsadm", "-Sn"], capture_output=True, text=True, check=True).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def test_services_and_destinations_are_nat_with_the_asked_scheduler_and_persistence(
    kernel: KernelBackend,
) -> None:
    web = VirtualServer("10.96.0.10", 80, "TCP")
    dns = VirtualServer("10.96.0.11", 53, "UDP")
    kernel.add_service(web, ServiceSpec("rr", 60))
    kernel.add_destination(web, RealServer("10.2.16.5", 12345), DestinationSpec())
    kernel.add_destination(web, RealServer("10.2.17.5", 12345), DestinationSpec(weight=0))
    kernel.add_service(dns, ServiceSpec("wrr"))
    kernel.add_destination(dns, RealServer("10.2.16.5", 5353), DestinationSpec())
    assert ipvsadm_rules() == {
        "-A -t 10.96.0.10:80 -s rr -p 60",
        "-a -t 10.96.0.10:80 -r 10.2.16.5:12345 -m -w 1",
        "-a -t 10.96.0.10:80 -r 10.2.17.5:12345 -m -w 0",
        "-A -u 10.96.0.11:53 -s wrr",
        "-a -u 10.96.0.11:53 -r 10.2.16.5:5353 -m -w 1",
    }


def test_an_edit_keeps_the_service_and_drops_persistence(kernel: KernelBackend) -> None:
    web = VirtualServer("10.96.0.10", 80, "TCP")
    kernel.add_service(web, ServiceSpec("rr", 10800))
    kernel.add_destination(web, RealServer("10.2.16.5", 12345), DestinationSpec())
    kernel.edit_service(web, ServiceSpec("wrr", 0))
    assert ipvsadm_rules() == {
        "-A -t 10.96.0.10:80 -s wrr",
        "-a -t 10.96.0.10:80 -r 10.2.16.5:12345 -m -w 1",
    }


def test_a_service_made_by_ipvsadm_reads_back_as_it_is(kernel: KernelBackend) -> None:
    subprocess.run(["ipvsadm", "-A", "-t", "192.168.9.9:443", "-s", "wlc", "-p", "30"], check=True)
    subprocess.run(
        ["ipvsadm", "-a", "-t", "192.168.9.9:443", "-r", "10.2.16.9", "-g", "-w", "4"],
        check=True,
    )
    state = kernel.read_state()
    foreign = state.services[VirtualServer("192.168.9.9", 443, "TCP")]
    assert foreign.spec == ServiceSpec("wlc", 30)
    assert foreign.destinations == {
        # direct routing keeps the service port
        RealServer("10.2.16.9", 443): DestinationSpec(weight=4, forwarding="route")
    }
