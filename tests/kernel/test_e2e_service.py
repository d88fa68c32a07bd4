"""End to end on a real kernel (user-mode-linux): Service -> operators -> proxy -> IPVS -> pod.

The apiserver (in-process, SQLite), ``minik8s operators`` and ``minik8s proxy`` run as a
user runs them; pods are network namespaces behind veths serving ``Hello, world!``, and
their Pod objects carry the namespace's IP in ``status.podIP``. Traffic goes from the
node to ``CLUSTER-IP:PORT``; IPVS state is read with ipvsadm and ip, not with our code.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from minik8s.client import ApiClient
from tests.kernel.pods import HELLO_PORT, pod_netns
from tests.support.operators import running_operators
from tests.support.server import running_apiserver

REPO = Path(__file__).resolve().parents[2]
SERVICE_CIDR = "10.96.0.0/16"
DEADLINE_S = 60.0


@dataclass
class Cluster:
    url: str
    kubeconfig: Path
    proxy: subprocess.Popen[bytes]
    proxy_log: Path

    def proxy_tail(self, lines: int = 80) -> str:
        return "\n".join(self.proxy_log.read_text(errors="replace").splitlines()[-lines:])

    def metrics_url(self) -> str | None:
        found = re.search(r"serving metrics on (http://\S+/metrics)", self.proxy_log.read_text())
        return found.group(1) if found else None


@contextlib.contextmanager
def running_proxy(kubeconfig: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``minik8s proxy`` with fast syncs; ``extra`` options override the defaults."""
    with tempfile.NamedTemporaryFile(prefix="proxy-", suffix=".log", delete=False) as f:
        log = Path(f.name)
    cmd = [
        sys.executable,
        "-m",
        "minik8s",
        "proxy",
        "--kubeconfig",
        str(kubeconfig),
        "--service-cidr",
        SERVICE_CIDR,
        "--min-sync-period",
        "0.1",
        "--sync-period",
        "2",
        "--metrics-bind-address",
        "127.0.0.1:0",
        *extra,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        yield process, log
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        print(f"--- proxy log ---\n{log.read_text(errors='replace')[-8000:]}")
        log.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_apiserver() as api:
        with running_operators(
            api.kubeconfig, "--service-cidr", SERVICE_CIDR, "--no-webhook", url=api.url
        ):
            with running_proxy(api.kubeconfig) as (proxy, log):
                yield Cluster(api.url, api.kubeconfig, proxy, log)


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[ApiClient]:
    async with ApiClient.from_kubeconfig(cluster.kubeconfig) as client:
        yield client


# ------------------------------------------------------------------ helpers


async def eventually(
    check: Callable[[], Any], what: str, cluster: Cluster, within: float = DEADLINE_S
) -> Any:
    """Poll ``check`` (sync or async) until it returns a truthy value."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if cluster.proxy.poll() is not None:
            raise AssertionError(f"the proxy exited ({cluster.proxy.returncode}) while waiting")
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within}s: {what}\n{cluster.proxy_tail()}")
        await asyncio.sleep(0.1)


async def hello(address: str, port: int) -> str | None:
    """GET over a fresh connection; the answering pod's name, or None on failure.

    Failures here are refusals, not waits (no route, or no listener: a reset), so the
    timeout only bounds an answer slowed by a loaded machine: the round-robin samples
    below count every answer, and a slow one must not read as a missing pod.
    """
    try:
        async with httpx.AsyncClient(timeout=15) as http:
            response = await http.get(f"http://{address}:{port}/")
    except httpx.HTTPError:
        return None
    if response.status_code != 200 or response.text != "Hello, world!":
        return None
    return response.headers.get("X-Pod")


def ipvs_destinations(address: str, port: int) -> set[str] | None:
    """``ip:port`` of each destination of the TCP service that takes new connections
    (weight > 0: a destination draining at weight 0 does not), None if there is no
    service."""
    out = subprocess.run(["ipvsadm", "-Sn"], capture_output=True, text=True, check=True).stdout
    vip = f"{address}:{port}"
    if not re.search(rf"^-A -t {re.escape(vip)} ", out, re.M):
        return None
    found = re.findall(rf"^-a -t {re.escape(vip)} -r (\S+) -m -w (\d+)", out, re.M)
    return {destination for destination, weight in found if int(weight) > 0}


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def shell(*argv: str) -> None:
    """Change the kernel by hand, as an administrator would."""
    await asyncio.to_thread(subprocess.run, argv, check=True)


def bound_addresses() -> set[str]:
    out = subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "dev", "kube-ipvs0"], capture_output=True, text=True
    ).stdout
    return set(re.findall(r"inet (\S+)/32", out))


def pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "containers": [
                {
                    "name": "hello",
                    "image": "hello",
                    "ports": [{"name": "web", "containerPort": HELLO_PORT}],
                }
            ]
        },
    }


def pod_status(address: str, ready: bool) -> dict[str, Any]:
    return {
        "status": {
            "phase": "Running",
            "podIP": address,
            "podIPs": [{"ip": address}],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        }
    }


async def start_pod(api: ApiClient, name: str, address: str, labels: dict[str, str]) -> None:
    await api.create("v1", "pods", pod(name, labels), "default")
    await api.patch("v1", "pods", name, pod_status(address, True), "default", subresource="status")


def service(name: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "targetPort": "web"}],
        },
    }


async def cluster_ip(api: ApiClient, name: str, cluster: Cluster) -> str:
    async def allocated() -> str | None:
        body = await api.get("v1", "services", name, "default")
        return (body.get("spec") or {}).get("clusterIP") or None

    address: str = await eventually(allocated, f"a ClusterIP for {name}", cluster)
    return address


# ------------------------------------------------------------------ tests


async def test_cluster_ip_reaches_ready_pods_round_robin_until_the_service_goes(
    cluster: Cluster, api: ApiClient
) -> None:
    with pod_netns("pod1", "10.2.16.5", "10.2.16.1"):
        await start_pod(api, "hello-1", "10.2.16.5", {"app": "hello"})
        await api.create("v1", "services", service("hello", "hello"), "default")
        vip = await cluster_ip(api, "hello", cluster)

        # The proxy binds the ClusterIP and programs IPVS: the pod answers through it.
        assert await eventually(lambda: hello(vip, 80), f"Hello from {vip}:80", cluster) == "pod1"
        assert vip in bound_addresses()
        assert ipvs_destinations(vip, 80) == {"10.2.16.5:12345"}

        with pod_netns("pod2", "10.2.17.5", "10.2.17.1"):
            # A second pod joins: both answer, in turn.
            await start_pod(api, "hello-2", "10.2.17.5", {"app": "hello"})
            await eventually(
                lambda: ipvs_destinations(vip, 80) == {"10.2.16.5:12345", "10.2.17.5:12345"},
                "both pods as destinations",
                cluster,
            )
            answers = [await hello(vip, 80) for _ in range(6)]
            assert set(answers) == {"pod1", "pod2"}, answers

            # One turns not ready: traffic stops going to it.
            await api.patch(
                "v1",
                "pods",
                "hello-2",
                pod_status("10.2.17.5", False),
                "default",
                subresource="status",
            )
            await eventually(
                lambda: ipvs_destinations(vip, 80) == {"10.2.16.5:12345"},
                "the not-ready pod removed (or draining at weight 0)",
                cluster,
            )
            answers = [await hello(vip, 80) for _ in range(6)]
            assert answers == ["pod1"] * 6

        # The Service is deleted: its VIP and its IPVS service are gone.
        await api.delete("v1", "services", "hello", "default")
        await eventually(
            lambda: ipvs_destinations(vip, 80) is None and vip not in bound_addresses(),
            "the IPVS service and the VIP removed",
            cluster,
        )
        assert await hello(vip, 80) is None
        for name in ("hello-1", "hello-2"):
            await api.delete("v1", "pods", name, "default")

    # Each sync was timed; each endpoint change, from its trigger time to programmed.
    url = await eventually(cluster.metrics_url, "the proxy's metrics address", cluster)
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(url)).text
    assert metric(text, "kubeproxy_sync_proxy_rules_duration_seconds_count") >= 3
    assert metric(text, "kubeproxy_network_programming_duration_seconds_count") >= 1


async def test_a_rule_deleted_by_hand_comes_back_at_the_next_resync(
    cluster: Cluster, api: ApiClient
) -> None:
    with pod_netns("pod3", "10.2.18.5", "10.2.18.1"):
        await start_pod(api, "drift-1", "10.2.18.5", {"app": "drift"})
        await api.create("v1", "services", service("drift", "drift"), "default")
        vip = await cluster_ip(api, "drift", cluster)
        await eventually(
            lambda: ipvs_destinations(vip, 80) == {"10.2.18.5:12345"}, "drift programmed", cluster
        )

        # Only a full resync reads the kernel back, and one may run at any moment (every
        # 2 s here): not "gone, then back", which races it, but a full sync that had
        # something to repair, logged after the hand-made deletion.
        logged = len(cluster.proxy_log.read_bytes())

        def repaired() -> bool:
            since = cluster.proxy_log.read_bytes()[logged:].decode(errors="replace")
            return re.search(r"full sync: [1-9]\d* operations applied", since) is not None

        await shell("ipvsadm", "-d", "-t", f"{vip}:80", "-r", "10.2.18.5:12345")
        await eventually(
            lambda: repaired() and ipvs_destinations(vip, 80) == {"10.2.18.5:12345"},
            "the destination restored by a full resync",
            cluster,
        )
        await shell("ipvsadm", "-D", "-t", f"{vip}:80")
        await shell("ip", "addr", "del", f"{vip}/32", "dev", "kube-ipvs0")
        await eventually(
            lambda: ipvs_destinations(vip, 80) == {"10.2.18.5:12345"} and vip in bound_addresses(),
            "the service and its VIP restored by the resync",
            cluster,
        )
        assert await eventually(lambda: hello(vip, 80), f"Hello from {vip}:80", cluster) == "pod3"
        await api.delete("v1", "services", "drift", "default")
        await api.delete("v1", "pods", "drift-1", "default")


async def test_a_pod_reaches_a_cluster_ip_from_its_own_network_namespace(
    cluster: Cluster, api: ApiClient
) -> None:
    with pod_netns("pod4", "10.2.21.5", "10.2.21.1"), pod_netns("client", "10.2.22.5", "10.2.22.1"):
        await start_pod(api, "from-pod-1", "10.2.21.5", {"app": "from-pod"})
        await api.create("v1", "services", service("from-pod", "from-pod"), "default")
        vip = await cluster_ip(api, "from-pod", cluster)
        await eventually(
            lambda: ipvs_destinations(vip, 80) == {"10.2.21.5:12345"}, "programmed", cluster
        )

        def get_from_client_pod() -> bool:
            script = (
                "import urllib.request as u, sys; "
                f"sys.stdout.write(u.urlopen('http://{vip}:80/', timeout=3).read().decode())"
            )
            result = subprocess.run(
                ["ip", "netns", "exec", "client", sys.executable, "-c", script],
                capture_output=True,
                text=True,
                timeout=30,
            )
            return result.stdout == "Hello, world!"

        # Routed through the node (ip_forward=1), DNATed by IPVS, un-NATed on the way back.
        assert await eventually(
            lambda: asyncio.to_thread(get_from_client_pod), "Hello from the client pod", cluster
        )
        await api.delete("v1", "services", "from-pod", "default")
        await api.delete("v1", "pods", "from-pod-1", "default")


async def test_a_failing_netlink_call_is_logged_counted_and_retried_never_reported_done() -> None:
    # Its own apiserver and CIDR, so that the module's proxy leaves this one alone; every
    # service add fails in the kernel (no such scheduler module).
    with (
        running_apiserver() as server,
        running_proxy(
            server.kubeconfig, "--service-cidr", "10.97.0.0/16", "--scheduler", "nosuchsched"
        ) as (proxy, log),
    ):
        failing = Cluster(server.url, server.kubeconfig, proxy, log)
        async with ApiClient.from_kubeconfig(server.kubeconfig) as api:
            body = service("broken", "broken")
            body["spec"]["clusterIP"] = "10.97.0.10"
            await api.create("v1", "services", body, "default")

        def failures() -> int:
            return log.read_text(errors="replace").count("sync FAILED")

        await eventually(lambda: failures() >= 2, "the failure logged and retried", failing)
        text = log.read_text(errors="replace")
        assert "add IPVS service 10.97.0.10:80/TCP: No such file or directory" in text
        assert "operations applied" not in text  # never reported as done
        assert ipvs_destinations("10.97.0.10", 80) is None
        url = await eventually(failing.metrics_url, "the metrics address", failing)
        async with httpx.AsyncClient(timeout=5) as http:
            metrics = (await http.get(url)).text
        failed_adds = re.search(
            r'^kubeproxy_sync_proxy_rules_operations_total\{operation="AddService",'
            r'result="error"\} (\S+)$',
            metrics,
            re.M,
        )
        assert failed_adds is not None and float(failed_adds.group(1)) >= 2
