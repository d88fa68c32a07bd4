"""The seed's path, as a user walks it, on a real kernel (user-mode-linux): the walk
`make demo` shows (examples/seed_demo.py).

``minik8s up`` (apiserver + operators + proxy, since we are root and the kernel has
IPVS), then ``kubectl apply`` of the seed's Pod and Service (examples/), the Pod's
status carrying the IP of a network namespace serving ``Hello, world!`` on the port the
Service's named targetPort resolves to; then ``curl CLUSTER-IP:PORT``, and the address
gone from the kernel once the Service is deleted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.seed_demo import POD_IP, POD_PORT, log_tails, walk


def test_kubectl_apply_of_the_seed_then_curl_cluster_ip_says_hello(tmp_path: Path) -> None:
    said: list[str] = []
    try:
        answer = walk(tmp_path, said.append)
    except RuntimeError as exc:
        pytest.fail(f"{exc}\n" + "\n".join(said) + f"\n{log_tails(tmp_path)}")
    transcript = "\n".join(said)
    assert answer == "Hello, world!", transcript
    # The EndpointSlice resolved the named targetPort "nginx" to the pod's 6800, and the
    # proxy's virtual server forwards to it.
    assert f"-> {POD_IP}:{POD_PORT}" in transcript, transcript
    assert "gone from IPVS with its Service" in transcript, transcript


pytestmark = pytest.mark.kernel
