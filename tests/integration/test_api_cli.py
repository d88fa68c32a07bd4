"""``minik8s apiserver`` and ``minik8s up`` as users run them: real processes, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def server_of(kubeconfig: Path) -> str:
    server: str = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    return server


def wait_ready(proc: subprocess.Popen[bytes], kubeconfig: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        if kubeconfig.exists():
            url = server_of(kubeconfig)
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    raise AssertionError("the server was not ready within 30 s")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def apiserver(tmp_path: Path, store: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minik8s",
            "apiserver",
            "--port",
            "0",
            "--store",
            store,
            "--kubeconfig-out",
            str(tmp_path / "kubeconfig"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(15)


def test_objects_and_versions_survive_a_restart_on_the_same_store(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    store = f"sqlite:{tmp_path / 'state.db'}"
    first = apiserver(tmp_path, store)
    processes.append(first)
    url = wait_ready(first, tmp_path / "kubeconfig")
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"}}
    created = httpx.post(f"{url}{CONFIGMAPS}", json=body).json()
    assert stop(first) == 0
    (tmp_path / "kubeconfig").unlink()

    second = apiserver(tmp_path, store)
    processes.append(second)
    url = wait_ready(second, tmp_path / "kubeconfig")
    got = httpx.get(f"{url}{CONFIGMAPS}/kept").json()
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    again = httpx.post(
        f"{url}{CONFIGMAPS}", json={**body, "metadata": {"name": "after-restart"}}
    ).json()
    assert int(again["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert stop(second) == 0


def test_a_bad_store_url_is_refused_with_a_hint(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "minik8s", "apiserver", "--port", "0", "--store", "mysql://x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "sqlite:PATH" in done.stderr


def test_up_writes_a_kubeconfig_and_stops_cleanly_with_a_watch_open(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minik8s",
            "up",
            "--data-dir",
            str(tmp_path),
            "--port",
            "0",
            "--no-operators",
            "--proxy",
            "off",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    processes.append(proc)
    url = wait_ready(proc, tmp_path / "kubeconfig")
    assert proc.stdout is not None
    banner = b"".join(proc.stdout.readline() for _ in range(3)).decode()
    assert f"kubeconfig: {tmp_path / 'kubeconfig'}" in banner
    assert url in banner

    ended = threading.Event()

    def watch() -> None:
        timeout = httpx.Timeout(10, read=None)
        with httpx.stream("GET", f"{url}{CONFIGMAPS}?watch=true", timeout=timeout) as resp:
            for line in resp.iter_lines():
                if line:
                    json.loads(line)
        ended.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    deadline = time.monotonic() + 10
    while 'verb="WATCH"' not in httpx.get(f"{url}/metrics").text:
        assert time.monotonic() < deadline, "the watch never reached the server"
        time.sleep(0.05)
    assert stop(proc) == 0
    assert ended.wait(10)


def test_up_prints_the_kubeconfig_once_a_service_gets_its_cluster_ip_at_once(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    args = ["up", "--data-dir", str(tmp_path), "--port", "0", "--proxy", "off"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "minik8s", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    processes.append(proc)
    assert proc.stdout is not None
    banner = []
    for line in proc.stdout:  # up prints it within its 30 s wait for the operators
        banner.append(line.decode())
        if line.startswith(b"kubeconfig:"):
            break
    assert banner and banner[-1].startswith("kubeconfig:"), banner
    url = server_of(tmp_path / "kubeconfig")
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "at-once"},
        "spec": {"ports": [{"port": 80}]},
    }
    created = httpx.post(f"{url}/api/v1/namespaces/default/services", json=service)
    assert created.status_code == 201, created.text
    assert re.fullmatch(r"10\.\d+\.\d+\.\d+", created.json()["spec"].get("clusterIP", ""))
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0


def test_up_stops_the_operators_before_the_api_so_they_deregister_their_webhook(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    log = tmp_path / "up.log"
    args = ["up", "--data-dir", str(tmp_path), "--port", "0", "--proxy", "off"]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "minik8s", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    processes.append(proc)
    url = wait_ready(proc, tmp_path / "kubeconfig")
    path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
    deadline = time.monotonic() + 60
    while not any(c.get("webhooks") for c in httpx.get(f"{url}{path}").json()["items"]):
        assert time.monotonic() < deadline, "the operators never registered their webhook"
        time.sleep(0.1)
    started = re.search(r"started operators \(pid (\d+)\)", log.read_text())
    assert started, log.read_text()
    operators = int(started.group(1))

    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(30) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(operators, 0)  # stopped and reaped, not orphaned
    assert "did not stop" not in log.read_text()

    server = apiserver(tmp_path, f"sqlite:{tmp_path / 'state.db'}")
    processes.append(server)
    url = wait_ready(server, tmp_path / "kubeconfig")
    items = httpx.get(f"{url}{path}").json()["items"]
    assert items, "the webhook configuration was never written"
    assert all(not c.get("webhooks") for c in items), items
    assert stop(server) == 0
