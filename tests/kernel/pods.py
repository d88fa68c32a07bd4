"""Pod network namespaces for the kernel tests: a netns, a veth to the node, a server.

    with pod_netns("pod1", "10.2.16.5", "10.2.16.1") as pod:   # serves Hello, world!
        ...

The node side of the veth gets ``gateway/24``; the pod gets ``ip/24`` and a default route
through the node, so replies to a ClusterIP client come back through IPVS.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

HELLO_PORT = 12345
SERVER = Path(__file__).with_name("hello_server.py")


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


@dataclass
class Pod:
    name: str
    ip: str
    server: subprocess.Popen[bytes]


@contextlib.contextmanager
def pod_netns(name: str, address: str, gateway: str, port: int = HELLO_PORT) -> Iterator[Pod]:
    node_side, pod_side = f"veth-{name}", f"eth0-{name}"
    ip("netns", "add", name)
    server: subprocess.Popen[bytes] | None = None
    try:
        ip("link", "add", node_side, "type", "veth", "peer", "name", pod_side)
        ip("link", "set", pod_side, "netns", name)
        ip("addr", "add", f"{gateway}/24", "dev", node_side)
        ip("link", "set", node_side, "up")
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "link", "set", pod_side, "name", "eth0")
        ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", name, "link", "set", "eth0", "up")
        ip("-n", name, "route", "add", "default", "via", gateway)
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, str(SERVER), name, str(port)]
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://{address}:{port}/", timeout=1).text == "Hello, world!":
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server in {name} did not come up")
            time.sleep(0.05)
        yield Pod(name, address, server)
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
        subprocess.run(["ip", "link", "del", node_side], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
