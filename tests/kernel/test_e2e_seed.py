"""The seed's path, as a user walks it, on a real kernel (user-mode-linux).

``minik8s up`` (apiserver + operators + proxy, since we are root and the kernel has
IPVS), then ``kubectl apply`` of the seed's Service and Pod (examples/), the Pod's
status carrying the IP of a network namespace serving ``Hello, world!`` on the port the
Service's named targetPort resolves to; then ``curl CLUSTER-IP:PORT``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kernel.pods import pod_netns

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 90.0


@contextlib.contextmanager
def minik8s_up(data_dir: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes], Path]]:
    log = data_dir / "up.log"
    env = dict(os.environ, MINIK8S_HOME=str(data_dir))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "minik8s", "up", "--data-dir", str(data_dir), "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
    try:
        kubeconfig = data_dir / "kubeconfig"
        wait_for(
            lambda: "kubeconfig:" in log.read_text(errors="replace"), "minik8s up", process, log
        )
        yield kubeconfig, process, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        for name in ("up", "proxy", "operators"):
            path = data_dir / f"{name}.log"
            if path.exists():
                print(f"--- {name}.log ---\n{path.read_text(errors='replace')[-6000:]}")


def wait_for(
    check: Callable[[], Any], what: str, process: subprocess.Popen[bytes], log: Path
) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        result = check()
        if result:
            return result
        if process.poll() is not None:
            raise AssertionError(f"minik8s up exited ({process.returncode}):\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {DEADLINE_S}s: {what}")
        time.sleep(0.1)


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def hello(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).text == "Hello, world!"
    except httpx.HTTPError:
        return False


def test_kubectl_apply_of_the_seed_then_curl_cluster_ip_says_hello(tmp_path: Path) -> None:
    # The seed's Pod: the Service's targetPort "nginx" is its container port 6800.
    with (
        minik8s_up(tmp_path) as (kubeconfig, up, log),
        pod_netns("seed", "10.2.19.5", "10.2.19.1", port=6800),
    ):
        wait_for(lambda: (tmp_path / "proxy.log").exists(), "the proxy started", up, log)
        kubectl(kubeconfig, "apply", "-f", str(REPO / "examples" / "pod-example.yaml"))
        status = {
            "status": {
                "phase": "Running",
                "podIP": "10.2.19.5",
                "podIPs": [{"ip": "10.2.19.5"}],
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        }
        kubectl(
            kubeconfig,
            "patch",
            "pod",
            "pod",
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(status),
        )
        kubectl(kubeconfig, "apply", "-f", str(REPO / "examples" / "service.yaml"))

        def cluster_ip() -> str:
            out = kubectl(
                kubeconfig, "get", "service", "my-service", "-o", "jsonpath={.spec.clusterIP}"
            )
            return out if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", out) else ""

        vip = wait_for(cluster_ip, "a ClusterIP for my-service", up, log)
        url = f"http://{vip}:8080/"
        wait_for(lambda: hello(url), f"Hello, world! from {url}", up, log)

        kubectl(kubeconfig, "delete", "-f", str(REPO / "examples" / "service.yaml"))
        wait_for(lambda: not hello(url), "the ClusterIP gone with its Service", up, log)
        kubectl(kubeconfig, "delete", "-f", str(REPO / "examples" / "pod-example.yaml"))


pytestmark = pytest.mark.kernel
