"""The Greeting example, as examples/README.md runs it: kubectl applies, kopf runs the
operator module unmodified (logging in from the kubeconfig), the ConfigMap follows."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kopf._core.intents.registries import SmartOperatorRegistry  # kopf's default registry
from kopf.testing import KopfRunner
from kubernetes.config import kube_config

from tests.support.poll import wait_for
from tests.support.server import RunningApiserver, running_apiserver

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = ROOT / "examples" / "greeting" / "operator.py"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningApiserver]:
    with running_apiserver() as server:
        monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig))
        # The kubernetes client (kopf's login) reads $KUBECONFIG when first imported.
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(server.kubeconfig))
        yield server


def kubectl(api: RunningApiserver, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(api.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def output(api: RunningApiserver, *args: str) -> str:
    result = kubectl(api, *args)
    return result.stdout.strip() if result.returncode == 0 else ""


@pytest.mark.kubectl
def test_the_greeting_example_runs_as_its_readme_says(api: RunningApiserver) -> None:
    applied = kubectl(api, "apply", "-f", str(ROOT / "crds" / "greeting.yaml"))
    assert applied.returncode == 0, applied.stderr
    runner = KopfRunner(
        ["run", "-A", "--standalone", str(OPERATOR)],
        registry=SmartOperatorRegistry(),
        timeout=30,
    )
    with runner:
        created = kubectl(api, "apply", "-f", str(ROOT / "examples" / "greeting" / "hello.yaml"))
        assert created.returncode == 0, created.stderr
        message = wait_for(
            lambda: output(
                api, "get", "configmap", "hello-greeting", "-o", "jsonpath={.data.message}"
            ),
            what="the rendered ConfigMap",
        )
        assert message == "Hello, world!"
        row = wait_for(
            lambda: "Ready" in (got := output(api, "get", "greetings", "--no-headers")) and got,
            what="the Greeting's status",
        )
        assert row.split()[:4] == ["hello", "world", "Hello,", "world!"]

        patched = kubectl(
            api, "patch", "greeting", "hello", "--type=merge", "-p", '{"spec":{"greeting":"Howdy"}}'
        )
        assert patched.returncode == 0, patched.stderr
        wait_for(
            lambda: (
                output(api, "get", "configmap", "hello-greeting", "-o", "jsonpath={.data.message}")
                == "Howdy, world!"
            ),
            what="the re-rendered ConfigMap",
        )

        deleted = kubectl(api, "delete", "greeting", "hello", "--timeout=20s")
        assert deleted.returncode == 0, deleted.stderr
        gone = kubectl(api, "get", "configmap", "hello-greeting")
        assert gone.returncode != 0 and "NotFound" in gone.stderr
    assert runner.exception is None
    assert "Handler 'render_greeting' succeeded" in runner.output
    assert "Handler 'remove_greeting' succeeded" in runner.output
