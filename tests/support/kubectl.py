"""Run the real kubectl against a test apiserver, isolated from the user's own config.

Every command gets the server's kubeconfig, its own ``--cache-dir`` and ``HOME`` (kubectl
caches discovery and OpenAPI per server address, and would otherwise write to ~/.kube).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.server import RunningApiserver

KUBECTL = shutil.which("kubectl")


class Kubectl:
    def __init__(self, api: RunningApiserver) -> None:
        self.api = api
        self.cache = api.data_dir / "kube-cache"
        self.env = dict(os.environ, HOME=str(api.data_dir), KUBECONFIG=str(api.kubeconfig))

    def argv(self, *args: str) -> list[str]:
        assert KUBECTL is not None
        return [
            KUBECTL,
            "--kubeconfig",
            str(self.api.kubeconfig),
            "--cache-dir",
            str(self.cache),
            *args,
        ]

    def run(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(*args), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}{done.stdout}"
        return done

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def write(directory: Path, name: str, text: str) -> Path:
    """A manifest file for kubectl -f."""
    path = directory / name
    path.write_text(text)
    return path
