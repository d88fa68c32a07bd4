"""The proxy against the real apiserver: the runner on the fake backend, and the CLI."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from minik8s.client import ApiClient
from proxy.desired import ProxyConfig
from proxy.fake import FakeBackend
from proxy.runner import ProxyRunner
from proxy.state import DestinationSpec, RealServer, VirtualServer
from tests.support.server import RunningApiserver, apiserver

__all__ = ["apiserver"]

REPO = Path(__file__).resolve().parents[2]
VS = VirtualServer("10.96.0.10", 80, "TCP")


def service(name: str = "web", ip: str = "10.96.0.10") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "clusterIP": ip,
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": "web"}],
        },
    }


def endpoint_slice(*ips: str, service_name: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-a",
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
        "ports": [{"name": "http", "port": 12345, "protocol": "TCP"}],
    }


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the deadline")
        await asyncio.sleep(0.01)


@pytest.fixture
async def api(apiserver: RunningApiserver) -> AsyncIterator[ApiClient]:
    async with ApiClient.from_kubeconfig(apiserver.kubeconfig) as client:
        yield client


async def test_the_runner_follows_services_and_slices_from_the_apiserver(api: ApiClient) -> None:
    await api.create("v1", "services", service(), "default")
    backend = FakeBackend()
    runner = ProxyRunner(
        api, lambda: backend, ProxyConfig.from_strings(["10.96.0.0/12"]), min_sync_period=0.0
    )
    task = asyncio.create_task(runner.run())
    try:
        # A sync's operations are applied in a thread, the address bound after the service
        # is added: wait for both, then check that nothing else is there.
        await until(lambda: VS in backend.state.services and bool(backend.state.addresses))
        assert backend.state.addresses == {"10.96.0.10"}

        await api.create(
            "discovery.k8s.io/v1", "endpointslices", endpoint_slice("10.2.16.5"), "default"
        )
        await until(lambda: bool(backend.state.services[VS].destinations))
        assert backend.state.services[VS].destinations == {
            RealServer("10.2.16.5", 12345): DestinationSpec(1, "masq")
        }

        await api.delete("v1", "services", "web", "default")
        await until(lambda: not backend.state.services and not backend.state.addresses)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def minik8s(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minik8s", "proxy", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


async def test_dry_run_prints_the_plan_and_changes_nothing(
    api: ApiClient, apiserver: RunningApiserver
) -> None:
    await api.create("v1", "services", service(), "default")
    await api.create(
        "discovery.k8s.io/v1", "endpointslices", endpoint_slice("10.2.16.5"), "default"
    )
    result = await asyncio.to_thread(
        minik8s, "--kubeconfig", str(apiserver.kubeconfig), "--dry-run"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# plan against")
    assert "add service 10.96.0.10:80/TCP (rr)" in lines
    assert "add destination 10.2.16.5:12345 to 10.96.0.10:80/TCP (masq weight 1)" in lines
    assert "bind 10.96.0.10/32 on kube-ipvs0" in lines


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to drop to nobody"
)
async def test_dry_run_works_without_root(api: ApiClient, apiserver: RunningApiserver) -> None:
    await api.create("v1", "services", service(), "default")
    result = await asyncio.to_thread(dry_run_as_nobody, apiserver.kubeconfig)
    assert result.returncode == 0, result.stderr
    assert "add service 10.96.0.10:80/TCP (rr)" in result.stdout.splitlines()


def dry_run_as_nobody(kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    shared = Path(tempfile.mkdtemp(prefix="proxy-dry-run-"))
    try:
        shared.chmod(0o755)
        readable = shared / "kubeconfig"
        shutil.copy(kubeconfig, readable)
        readable.chmod(0o644)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        command = ["-m", "minik8s", "proxy", "--kubeconfig", str(readable), "--dry-run"]
        return subprocess.run(
            [*nobody, sys.executable, *command],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
    finally:
        shutil.rmtree(shared)


@pytest.mark.skipif(os.path.exists("/proc/net/ip_vs"), reason="this kernel has IPVS")
async def test_without_ipvs_in_the_kernel_the_proxy_says_so_and_fails(
    apiserver: RunningApiserver,
) -> None:
    result = await asyncio.to_thread(
        minik8s, "--kubeconfig", str(apiserver.kubeconfig), "--metrics-bind-address", ""
    )
    assert result.returncode != 0
    assert "no IPVS" in result.stderr or "needs root" in result.stderr


async def test_an_unreachable_apiserver_is_reported_with_what_to_do(tmp_path: Path) -> None:
    from minik8s.config import write_kubeconfig

    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")
    result = await asyncio.to_thread(minik8s, "--kubeconfig", str(kubeconfig), "--dry-run")
    assert result.returncode == 1
    assert "minik8s up" in result.stderr
