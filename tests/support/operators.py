"""The operators as a user runs them: ``minik8s operators`` in a subprocess.

    with running_operators(api.kubeconfig, "--service-cidr", "10.96.0.0/22") as op:
        ...                       # op.process, op.log (the operator's stderr)
        op.kill()                 # kill -9

Readiness: with the webhook, the MutatingWebhookConfiguration kopf manages carries the
webhook URL; in every mode a probe Service gets its EndpointSlice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

READY_TIMEOUT_S = 30.0
REPO = Path(__file__).resolve().parents[2]


@dataclass
class RunningOperators:
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """kill -9: no cleanup, no webhook deregistration."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _wait_ready(
    url: str, op: RunningOperators, webhook_config: str | None, controllers: set[str]
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    name = f"probe-{uuid.uuid4().hex[:8]}"
    created = False
    with httpx.Client(base_url=url, timeout=10) as http:
        while time.monotonic() < deadline:
            if op.process.poll() is not None:
                raise RuntimeError(f"the operators exited ({op.process.returncode}):\n{op.tail()}")
            if webhook_config is not None:
                r = http.get(
                    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/"
                    + webhook_config
                )
                hooks = r.json().get("webhooks") or [] if r.status_code == 200 else []
                if not any((h.get("clientConfig") or {}).get("url") for h in hooks):
                    time.sleep(0.05)
                    continue
            if not created:
                body = {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"selector": {"probe": name}, "ports": [{"port": 80}]},
                }
                r = http.post("/api/v1/namespaces/default/services", json=body)
                created = r.status_code == 201
                if not created:
                    time.sleep(0.05)
                    continue
            ready = True
            if "services" in controllers:
                r = http.get(f"/api/v1/namespaces/default/services/{name}")
                ready = r.status_code == 200 and bool(r.json()["spec"].get("clusterIP"))
            if ready and "endpoints" in controllers:
                r = http.get(
                    "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                    params={"labelSelector": f"kubernetes.io/service-name={name}"},
                )
                ready = r.status_code == 200 and bool(r.json().get("items"))
            if ready:
                http.delete(f"/api/v1/namespaces/default/services/{name}")
                return
            time.sleep(0.05)
    raise RuntimeError(f"the operators were not ready within {READY_TIMEOUT_S} s:\n{op.tail()}")


@contextlib.contextmanager
def running_operators(
    kubeconfig: Path, *args: str, url: str, webhook_config: str | None = None
) -> Iterator[RunningOperators]:
    """Start ``minik8s operators --kubeconfig K *args`` and wait until it works."""
    controllers = {"services", "endpoints"}
    if "--controllers" in args:
        controllers = set(args[args.index("--controllers") + 1].split(","))
    webhook = "--no-webhook" not in args and "services" in controllers
    if webhook and webhook_config is None:
        webhook_config = f"operators-{uuid.uuid4().hex[:8]}.minik8s.io"
    cmd = [sys.executable, "-m", "minik8s", "operators", "--kubeconfig", str(kubeconfig), *args]
    if webhook:
        cmd += ["--webhook-config", str(webhook_config)]
    with tempfile.NamedTemporaryFile(prefix="operators-", suffix=".log", delete=False) as f:
        log = Path(f.name)
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )
    op = RunningOperators(process, log)
    try:
        _wait_ready(url, op, webhook_config if webhook else None, controllers)
        yield op
    finally:
        op.stop()
        print(f"--- operators log ({log}) ---\n{op.tail(200)}")  # shown by pytest on failure
        log.unlink(missing_ok=True)
