"""kopf benchmark: handler latency on a custom kind, over 1,000 objects.

Three processes, as a user runs them: ``minik8s apiserver`` on the embedded SQLite store,
an unmodified ``kopf run`` with a one-handler operator (logging in from the kubeconfig),
and this client. For each object, one at a time:

- **create -> handler's patch**: from sending the create until the client's watch sees
  the object carrying what the ``on.create`` handler patched (into its status). Baseline, same
  run: from the create until the client's watch sees the object's own ADDED event (the
  apiserver's write and fan-out alone).
- **update -> handler's patch**: the spec is changed right after the create was handled;
  until the watch sees the ``on.update`` handler's patch. kopf runs a state-changing
  handler only once it has seen the watch event carrying the resourceVersion its previous
  PATCH returned; were the two to differ, every such cycle would wait
  ``consistency_timeout`` (5 s) — this figure shows they do not.

Targets (issue 4): p50 <= 20 ms, p99 <= 100 ms.

Run alone: ``python -m bench.kopf [--objects N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

OBJECTS = 1000
REPO = Path(__file__).resolve().parents[1]
GROUP = "bench.minik8s.dev"
PLURAL = "pings"
CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"kind": "Ping", "plural": PLURAL},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {"n": {"type": "integer"}}},
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}
# Async handlers: kopf runs sync ones in a thread pool (a thread hop per handler).
OPERATOR = f'''
import kopf

@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.posting.enabled = False
    settings.watching.server_timeout = 600

@kopf.on.create("{GROUP}", "{PLURAL}")
async def ping_created(patch, **_):
    patch.status["created"] = "handled"

@kopf.on.update("{GROUP}", "{PLURAL}", field="spec")
async def ping_updated(spec, patch, **_):
    patch.status["updated"] = str(spec.get("n"))
'''
BASE = f"/apis/{GROUP}/v1/namespaces/default/{PLURAL}"


@dataclass
class Figures:
    created_ms: list[float] = field(default_factory=list)
    updated_ms: list[float] = field(default_factory=list)
    baseline_ms: list[float] = field(default_factory=list)


def percentile(samples: list[float], p: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


@contextlib.contextmanager
def process(
    cmd: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Watch:
    """One watch on the kind; waiters get the time of the first event satisfying them."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.waiters: dict[
            str, list[tuple[Callable[[str, dict[str, Any]], bool], asyncio.Future[float]]]
        ] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        rv = (await self.http.get(BASE)).json()["metadata"]["resourceVersion"]
        ready = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._run(rv, ready))
        await ready

    async def _run(self, rv: str, ready: asyncio.Future[None]) -> None:
        params = {"watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true"}
        async with self.http.stream("GET", BASE, params=params, timeout=None) as stream:
            ready.set_result(None)
            async for line in stream.aiter_lines():
                if not line:
                    continue
                now = time.perf_counter()
                event = json.loads(line)
                obj = event["object"]
                name = (obj.get("metadata") or {}).get("name", "")
                for entry in list(self.waiters.get(name, ())):
                    match, fut = entry
                    if not fut.done() and match(event["type"], obj):
                        fut.set_result(now)
                        self.waiters[name].remove(entry)

    def expect(
        self, name: str, match: Callable[[str, dict[str, Any]], bool]
    ) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(name, []).append((match, fut))
        return fut

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await self.task


def _status(key: str, value: str) -> Callable[[str, dict[str, Any]], bool]:
    def match(_type: str, obj: dict[str, Any]) -> bool:
        return (obj.get("status") or {}).get(key) == value

    return match


def _added(type_: str, _obj: dict[str, Any]) -> bool:
    return type_ == "ADDED"


async def _measure_against(url: str, objects: int, figures: Figures) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        watch = Watch(http)
        await watch.start()
        try:
            # Warm-up: kopf is watching once it handles a first object.
            warm = watch.expect("warm-up", _status("created", "handled"))
            await http.post(BASE, json=_ping("warm-up", 0))
            await asyncio.wait_for(warm, 60)
            for i in range(objects):
                name = f"ping-{i}"
                added = watch.expect(name, _added)
                created = watch.expect(name, _status("created", "handled"))
                start = time.perf_counter()
                resp = await http.post(BASE, json=_ping(name, 0))
                resp.raise_for_status()
                figures.baseline_ms.append((await asyncio.wait_for(added, 10) - start) * 1000)
                figures.created_ms.append((await asyncio.wait_for(created, 10) - start) * 1000)
                updated = watch.expect(name, _status("updated", "1"))
                start = time.perf_counter()
                resp = await http.patch(
                    f"{BASE}/{name}",
                    json={"spec": {"n": 1}},
                    headers={"Content-Type": "application/merge-patch+json"},
                )
                resp.raise_for_status()
                figures.updated_ms.append((await asyncio.wait_for(updated, 10) - start) * 1000)
        finally:
            await watch.stop()


def _ping(name: str, n: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Ping",
        "metadata": {"name": name},
        "spec": {"n": n},
    }


def measure(objects: int = OBJECTS) -> Figures:
    figures = Figures()
    with tempfile.TemporaryDirectory(prefix="minik8s-bench-kopf-") as tmp:
        data = Path(tmp)
        kubeconfig = data / "kubeconfig"
        apiserver = [
            sys.executable,
            "-m",
            "minik8s",
            "apiserver",
            "--port",
            "0",
            "--store",
            f"sqlite:{data / 'state.db'}",
            "--kubeconfig-out",
            str(kubeconfig),
        ]
        with process(apiserver, data / "apiserver.log"):
            wait_until(kubeconfig.exists, 30, "the apiserver's kubeconfig")
            from minik8s.config import load_kubeconfig

            url = load_kubeconfig(kubeconfig).server
            wait_until(lambda: _ok(f"{url}/readyz"), 30, "the apiserver")
            httpx.post(
                f"{url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=CRD
            ).raise_for_status()
            wait_until(lambda: _ok(f"{url}{BASE}"), 10, "the custom kind to be served")
            operator = data / "ping_operator.py"
            operator.write_text(OPERATOR)
            env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
            kopf_cmd = [
                sys.executable,
                "-m",
                "kopf",
                "run",
                "-A",
                "--standalone",
                "--quiet",
                str(operator),
            ]
            with process(kopf_cmd, data / "kopf.log", env=env):
                asyncio.run(_measure_against(url, objects, figures))
    return figures


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def summary(figures: Figures) -> dict[str, Any]:
    def stats(xs: list[float]) -> dict[str, float]:
        return {
            "n": len(xs),
            "p50_ms": round(percentile(xs, 50), 2),
            "p99_ms": round(percentile(xs, 99), 2),
            "mean_ms": round(statistics.fmean(xs), 2) if xs else float("nan"),
        }

    return {
        "create -> kopf on.create patch seen on a watch": stats(figures.created_ms),
        "update -> kopf on.update patch seen on a watch": stats(figures.updated_ms),
        "baseline: create -> its own ADDED event": stats(figures.baseline_ms),
    }


async def main(report: Any) -> None:
    """Entry for ``python -m bench`` (bench/report.py's Report)."""
    figures = await asyncio.to_thread(measure)
    s = summary(figures)
    baseline = s["baseline: create -> its own ADDED event"]
    section = report.section(
        "kopf handler latency",
        note=f"{OBJECTS:,} objects of a custom kind, one at a time; apiserver (SQLite), "
        "an unmodified `kopf run` and the client are three processes.",
    )
    for name in (
        "create -> kopf on.create patch seen on a watch",
        "update -> kopf on.update patch seen on a watch",
    ):
        p50, p99 = s[name]["p50_ms"], s[name]["p99_ms"]
        section.row(
            name,
            f"p50 {p50} ms, p99 {p99} ms",
            target="p50 <= 20 ms, p99 <= 100 ms",
            baseline=f"create -> its ADDED event: p50 {baseline['p50_ms']} ms, "
            f"p99 {baseline['p99_ms']} ms",
            ok=p50 <= 20 and p99 <= 100,
        )
    print(json.dumps(s, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--objects", type=int, default=OBJECTS)
    ns = parser.parse_args()
    print(json.dumps(summary(measure(ns.objects)), indent=2))
