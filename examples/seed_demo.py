"""The seed's Service path, end to end, down to the kernel: what `make demo` shows.

`make demo` runs this inside a user-mode-linux guest (a real Linux kernel with IPVS,
which this machine's own kernel may lack); as root on a Linux with IPVS,
`.venv/bin/python -m examples.seed_demo` runs it where you are. Step by step:

1. `minik8s up`: the apiserver on the embedded store, the operators and the proxy;
2. a stand-in for the seed's Pod, since minik8s has no kubelet: a network namespace at
   10.2.19.5 serving `Hello, world!` on 6800, the port its container port `nginx` names;
3. `kubectl apply` of examples/pod-example.yaml, then its status written as a kubelet
   would (Running, Ready, the pod's IP); then `kubectl apply` of examples/service.yaml;
4. the ClusterIP the service operator claimed, the EndpointSlice the endpoint operator
   wrote (the named targetPort resolved to 6800), the virtual server the proxy put in the
   kernel (`ipvsadm -Ln`);
5. `curl CLUSTER-IP:8080` answered by the pod; then the Service deleted, and the address
   gone from the kernel with it.

tests/kernel/test_e2e_seed.py runs the same walk and checks what it returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.kernel.pods import pod_netns

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 90.0
POD_IP, NODE_IP, POD_PORT = "10.2.19.5", "10.2.19.1", 6800

Say = Callable[[str], None]


class Up:
    """`minik8s up` running, with its log."""

    def __init__(self, process: subprocess.Popen[bytes], data_dir: Path) -> None:
        self.process, self.data_dir = process, data_dir
        self.log = data_dir / "up.log"
        self.kubeconfig = data_dir / "kubeconfig"

    def wait_for(self, check: Callable[[], Any], what: str) -> Any:
        """Poll ``check`` until it returns something truthy; fail if `up` dies or time runs out."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            result = check()
            if result:
                return result
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"minik8s up exited ({self.process.returncode}):\n{self.log.read_text()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"not reached within {DEADLINE_S:.0f} s: {what}")
            time.sleep(0.1)

    def kubectl(self, *args: str) -> str:
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout


@contextlib.contextmanager
def minik8s_up(data_dir: Path) -> Iterator[Up]:
    env = dict(os.environ, MINIK8S_HOME=str(data_dir))
    with (data_dir / "up.log").open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "minik8s", "up", "--data-dir", str(data_dir), "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
    up = Up(process, data_dir)
    try:
        up.wait_for(lambda: "kubeconfig:" in up.log.read_text(errors="replace"), "minik8s up")
        yield up
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def hello(url: str) -> str:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return ""


def ipvs_rules(vip: str, port: int) -> str:
    out = subprocess.run(
        ["ipvsadm", "-Ln", "-t", f"{vip}:{port}"], capture_output=True, text=True
    ).stdout
    return out if POD_IP in out else ""


def walk(data_dir: Path, say: Say) -> str:
    """The seed's path; returns what `curl CLUSTER-IP:8080` got from the pod."""
    examples = REPO / "examples"
    say("1. minik8s up: apiserver (embedded SQLite), operators, proxy")
    with minik8s_up(data_dir) as up:
        up.wait_for(lambda: (data_dir / "proxy.log").exists(), "the proxy started")
        say(f"   kubeconfig: {up.kubeconfig}")
        say(f"2. the seed's Pod, stood in for by netns 'seed': {POD_IP}, Hello on :{POD_PORT}")
        with pod_netns("seed", POD_IP, NODE_IP, port=POD_PORT):
            say("3. kubectl apply -f examples/pod-example.yaml, then its status as a kubelet's")
            say(up.kubectl("apply", "-f", str(examples / "pod-example.yaml")).rstrip())
            ready = {
                "status": {
                    "phase": "Running",
                    "podIP": POD_IP,
                    "podIPs": [{"ip": POD_IP}],
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [
                        {"name": name, "ready": True, "restartCount": 0, "image": image,
                         "imageID": "", "state": {"running": {}}}
                        for name, image in (
                            ("viewer", "dplsming/nginx-fileserver:1.0"),
                            ("downloader", "dplsming/aria2ng-downloader:1.0"),
                        )
                    ],
                }
            }  # fmt: skip
            up.kubectl(
                "patch", "pod", "pod", "--subresource=status", "--type=merge",
                "-p", json.dumps(ready),
            )  # fmt: skip
            say(up.kubectl("get", "pod", "pod", "-o", "wide").rstrip())
            say("   kubectl apply -f examples/service.yaml")
            say(up.kubectl("apply", "-f", str(examples / "service.yaml")).rstrip())

            def cluster_ip() -> str:
                out = up.kubectl("get", "service", "my-service", "-o", "jsonpath={.spec.clusterIP}")
                return out if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", out) else ""

            vip = up.wait_for(cluster_ip, "a ClusterIP for my-service")
            say("4. the ClusterIP (service operator), the EndpointSlice (endpoint operator)")
            say(up.kubectl("get", "service", "my-service", "-o", "wide").rstrip())
            selector = "kubernetes.io/service-name=my-service"
            up.wait_for(
                lambda: str(POD_PORT) in up.kubectl("get", "endpointslices", "-l", selector),
                "the EndpointSlice of my-service",
            )
            say(up.kubectl("get", "endpointslices", "-l", selector, "-o", "wide").rstrip())
            say("   and the virtual server the proxy programmed (ipvsadm -Ln):")
            say(up.wait_for(lambda: ipvs_rules(vip, 8080), f"IPVS rules for {vip}:8080").rstrip())
            url = f"http://{vip}:8080/"
            say(f"5. curl {url}")
            answer: str = up.wait_for(lambda: hello(url), f"an answer from {url}")
            if shutil.which("curl"):  # the real thing, once the rules are known to work
                answer = subprocess.run(
                    ["curl", "-sS", "--max-time", "5", url], capture_output=True, text=True
                ).stdout
            say(f"   {answer}")
            say("   kubectl delete -f examples/service.yaml")
            say(up.kubectl("delete", "-f", str(examples / "service.yaml")).rstrip())
            up.wait_for(lambda: not ipvs_rules(vip, 8080), f"{vip} gone from IPVS")
            say(f"   {vip}:8080 is gone from IPVS with its Service")
            up.kubectl("delete", "-f", str(examples / "pod-example.yaml"))
    return answer


def log_tails(data_dir: Path, chars: int = 3000) -> str:
    """The end of each component's log, for when a step fails."""
    tails = []
    for name in ("up", "operators", "proxy"):
        log = data_dir / f"{name}.log"
        if log.exists():
            tails.append(f"--- {log} ---\n{log.read_text(errors='replace')[-chars:]}")
    return "\n".join(tails)


def main() -> int:
    if os.geteuid() != 0 or not os.path.exists("/proc/net/ip_vs"):
        print(
            "needs root and a kernel with IPVS (/proc/net/ip_vs); `make demo` runs it in a"
            " user-mode-linux guest that has both",
            file=sys.stderr,
        )
        return 2
    if shutil.which("kubectl") is None:
        print("kubectl is not on PATH: install it (kubectl v1.32 is what minik8s serves)")
        return 2
    data_dir = Path(tempfile.mkdtemp(prefix="minik8s-demo-"))
    try:
        answer = walk(data_dir, lambda line: print(line, flush=True))
    except RuntimeError as exc:
        print(f"demo failed: {exc}\n{log_tails(data_dir)}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0 if answer == "Hello, world!" else 1


if __name__ == "__main__":
    sys.exit(main())
