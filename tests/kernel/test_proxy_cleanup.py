"""``minik8s proxy --cleanup`` removes what the proxy owns, and only that."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.ipvs import KernelBackend
from proxy.state import DestinationSpec, RealServer, ServiceSpec, VirtualServer
from tests.conformance.test_ipvs_backend import make_kernel_backend

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def kernel() -> Iterator[KernelBackend]:
    for backend in make_kernel_backend():
        assert isinstance(backend, KernelBackend)
        yield backend


def cleanup() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minik8s", "proxy", "--cleanup", "--service-cidr", "10.96.0.0/16"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def interface_exists() -> bool:
    return subprocess.run(["ip", "link", "show", "kube-ipvs0"], capture_output=True).returncode == 0


def test_cleanup_removes_owned_rules_and_vips_then_the_empty_interface(
    kernel: KernelBackend,
) -> None:
    owned = VirtualServer("10.96.0.50", 80, "TCP")
    foreign = VirtualServer("192.168.50.1", 80, "TCP")
    kernel.ensure_node_setup()
    for vs in (owned, foreign):
        kernel.add_service(vs, ServiceSpec())
        kernel.add_destination(vs, RealServer("10.2.16.5", 8080), DestinationSpec())
    kernel.bind_address("10.96.0.50")

    result = cleanup()
    assert result.returncode == 0, result.stderr
    assert "delete service 10.96.0.50:80/TCP" in result.stdout
    state = kernel.read_state()
    assert set(state.services) == {foreign}
    assert not interface_exists()


def test_cleanup_keeps_the_interface_while_foreign_addresses_are_on_it(
    kernel: KernelBackend,
) -> None:
    kernel.ensure_node_setup()
    kernel.bind_address("10.96.0.51")
    kernel.bind_address("172.31.0.1")  # not in the service CIDR: not ours
    result = cleanup()
    assert result.returncode == 0, result.stderr
    assert kernel.list_addresses() == {"172.31.0.1"}
    assert interface_exists()
