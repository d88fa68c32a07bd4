"""Connection counts read back from the kernel drive graceful termination."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from proxy.desired import ProxyConfig
from proxy.ipvs import KernelBackend
from proxy.plan import EditDestination, apply, plan
from proxy.state import DestinationSpec, IpvsState, RealServer, Service, ServiceSpec, VirtualServer
from tests.conformance.test_ipvs_backend import make_kernel_backend
from tests.kernel.pods import HELLO_PORT, pod_netns

VS = VirtualServer("10.96.0.40", 80, "TCP")
POD = RealServer("10.2.20.5", HELLO_PORT)


@pytest.fixture
def kernel() -> Iterator[KernelBackend]:
    for backend in make_kernel_backend():
        assert isinstance(backend, KernelBackend)
        yield backend


def test_an_open_connection_is_counted_and_its_destination_drained_not_deleted(
    kernel: KernelBackend,
) -> None:
    owns = ProxyConfig.from_strings(["10.96.0.0/12"]).owns
    with pod_netns("conn", POD.address, "10.2.20.1"):
        kernel.ensure_node_setup()
        wanted = IpvsState({VS: Service(ServiceSpec(), {POD: DestinationSpec()})}, {VS.address})
        apply(plan(wanted, kernel.read_state(), owns), kernel)
        with socket.create_connection((VS.address, VS.port), timeout=5) as client:
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := client.recv(4096):  # the server closes after its answer
                reply += chunk
            assert b"Hello, world!" in reply
        actual = kernel.read_state()
        assert actual.connections.get((VS, POD), 0) >= 1

        endpoint_gone = IpvsState({VS: Service(ServiceSpec())}, {VS.address})
        ops = plan(endpoint_gone, actual, owns)
        assert ops == [EditDestination(VS, POD, DestinationSpec(0, "masq"))]
        apply(ops, kernel)
        after = kernel.read_state()
        assert after.services[VS].destinations == {POD: DestinationSpec(0, "masq")}
        assert plan(endpoint_gone, after, owns) == []
