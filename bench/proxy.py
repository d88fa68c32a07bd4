"""Proxy benchmark: what a change costs, and what a full resync costs, against IPVS.

- **one change among 10,000**: 10,000 Services x 3 endpoints programmed; then one
  Service's EndpointSlice changes (an endpoint replaced: 2 IPVS operations). Timed:
  tracker update + partial plan + apply + model update, i.e. what the runner does per
  change. Target (issue 6): <= 20 ms, the cost following the change, not the total.
  Baseline, same run: a no-op *full* plan over the same 10,000 services (what a
  proxy that diffs everything would pay per change, before any I/O).
  On the fake backend (in-process) and on the kernel (in user-mode-linux).
- **full resync of 1,000 Services x 3 endpoints** on the kernel, in UML: from empty
  (node setup + read back + plan + apply) and a no-op one (read back + plan, 0
  operations). Baseline, same run, same state: ``ipvsadm -Sn`` (C, one dump per
  service).

Run alone: ``python -m bench.proxy`` (the kernel part boots UML through
tests/kernel/uml-run.sh when run as root; inside the guest ``--kernel`` measures it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from proxy.desired import DesiredTracker, ProxyConfig
from proxy.fake import FakeBackend
from proxy.ipvs import IpvsBackend
from proxy.plan import apply, plan, record
from proxy.state import IpvsState

REPO = Path(__file__).resolve().parents[1]
CONFIG = ProxyConfig.from_strings(["10.96.0.0/12"])
CHANGES = 200


def service(i: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"s{i}", "namespace": "bench"},
        "spec": {
            "clusterIP": f"10.{96 + i // 65536}.{(i // 256) % 256}.{i % 256}",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        },
    }


def endpoint_slice(i: int, variant: int = 0) -> dict[str, Any]:
    base = f"10.{100 + i // 65536}.{(i // 256) % 256}"
    addresses = [f"{base}.{k}" for k in range(3)]  # a 4th replaces the 3rd in variant 1
    if variant:
        addresses[2] = f"{base}.3"
    return {
        "metadata": {
            "name": f"s{i}-a",
            "namespace": "bench",
            "labels": {"kubernetes.io/service-name": f"s{i}"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [a], "conditions": {"ready": True}, "targetRef": {"name": f"p{i}-{k}"}}
            for k, a in enumerate(addresses)
        ],
        "ports": [{"name": "http", "port": 8080 + i % 1000, "protocol": "TCP"}],
    }


def tracker_for(count: int) -> DesiredTracker:
    tracker = DesiredTracker(CONFIG)
    for i in range(count):
        tracker.upsert_service(service(i))
        tracker.upsert_slice(endpoint_slice(i))
    tracker.take_touched()
    return tracker


def stats_ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    return {
        "n": len(samples),
        "p50_ms": round(pct(50), 3),
        "p99_ms": round(pct(99), 3),
        "max_ms": round(max(samples) * 1000, 3),
        "mean_ms": round(statistics.fmean(samples) * 1000, 3),
    }


def one_change(
    tracker: DesiredTracker, model: IpvsState, backend: IpvsBackend, count: int
) -> dict[str, Any]:
    """Time CHANGES single-service changes; and the no-op full plan baseline."""
    samples: list[float] = []
    ops_per_change: set[int] = set()
    for n in range(CHANGES):
        i = (n * 7919) % count
        started = time.perf_counter()
        tracker.upsert_slice(endpoint_slice(i, variant=1 - (n // count) % 2))
        touched = tracker.take_touched()
        ops = plan(tracker.state, model, CONFIG.owns, touched)
        record(model, apply(ops, backend))
        samples.append(time.perf_counter() - started)
        ops_per_change.add(len(ops))
    baseline: list[float] = []
    for _ in range(5):
        started = time.perf_counter()
        assert plan(tracker.state, model, CONFIG.owns) == []
        baseline.append(time.perf_counter() - started)
    return {
        "one change: update + partial plan + apply": stats_ms(samples),
        "operations per change": sorted(ops_per_change),
        "baseline: no-op full plan of all services": stats_ms(baseline),
    }


def fake_figures(count: int = 10_000) -> dict[str, Any]:
    tracker = tracker_for(count)
    backend = FakeBackend()
    model = IpvsState()
    started = time.perf_counter()
    record(model, apply(plan(tracker.state, model, CONFIG.owns), backend))
    programmed = time.perf_counter() - started
    out = {"services": count, "full program from empty (fake) s": round(programmed, 3)}
    out.update(one_change(tracker, model, backend, count))
    return out


# ---------------------------------------------------------------------- kernel (in UML)


def ipvsadm_restore(state: IpvsState) -> None:
    """Program a state in bulk with ipvsadm -R and ip -batch (setup, not timed)."""
    lines = []
    for vs, svc in state.services.items():
        lines.append(f"-A -t {vs.address}:{vs.port} -s {svc.spec.scheduler}")
        for rs, spec in svc.destinations.items():
            lines.append(
                f"-a -t {vs.address}:{vs.port} -r {rs.address}:{rs.port} -m -w {spec.weight}"
            )
    subprocess.run(["ipvsadm", "-R"], input="\n".join(lines) + "\n", text=True, check=True)
    batch = "".join(f"addr add {a}/32 dev kube-ipvs0\n" for a in state.addresses)
    subprocess.run(["ip", "-batch", "-"], input=batch, text=True, check=True)


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def kernel_figures(resync_services: int = 1000, change_services: int = 10_000) -> dict[str, Any]:
    from proxy.ipvs import KernelBackend

    backend = KernelBackend()
    backend.flush()
    for address in backend.list_addresses():
        backend.unbind_address(address)
    out: dict[str, Any] = {
        "kernel": os.uname().release,
        "services for resync": resync_services,
        "services for one change": change_services,
    }

    # Full resync of 1,000 x 3, from empty, then a no-op one; ipvsadm -Sn as baseline.
    tracker = tracker_for(resync_services)

    def full_sync() -> int:
        backend.ensure_node_setup()
        actual = backend.read_state()
        ops = plan(tracker.state, actual, CONFIG.owns)
        apply(ops, backend)
        return len(ops)

    seconds, ops = timed(full_sync)
    out[f"full resync {resync_services}x3 from empty s"] = round(seconds, 3)
    out["operations from empty"] = ops
    seconds, ops = timed(full_sync)
    out[f"no-op full resync {resync_services}x3 s"] = round(seconds, 3)
    out["operations in the no-op resync"] = ops
    dump = subprocess.run(["ipvsadm", "-Sn"], capture_output=True, text=True, check=True)
    seconds, _ = timed(lambda: subprocess.run(["ipvsadm", "-Sn"], capture_output=True, check=True))
    out[f"baseline: ipvsadm -Sn of the same {resync_services}x3 s"] = round(seconds, 3)
    out["ipvsadm -Sn lines"] = len(dump.stdout.splitlines())
    backend.flush()
    for address in backend.list_addresses():
        backend.unbind_address(address)
    seconds, _ = timed(ipvsadm_restore, tracker.state)
    out[f"baseline: ipvsadm -R of {resync_services}x3 s"] = round(seconds, 3)

    # One change among 10,000 programmed.
    backend.flush()
    for address in backend.list_addresses():
        backend.unbind_address(address)
    tracker = tracker_for(change_services)
    seconds, _ = timed(ipvsadm_restore, tracker.state)
    out[f"setup: ipvsadm -R + ip -batch of {change_services}x3 s"] = round(seconds, 3)
    model = tracker.state.copy()  # what was just programmed
    out.update(one_change(tracker, model, backend, change_services))
    backend.flush()
    for address in backend.list_addresses():
        backend.unbind_address(address)
    backend.close()
    return out


def kernel_figures_via_uml() -> dict[str, Any]:
    harness = REPO / "tests" / "kernel" / "uml-run.sh"
    if os.geteuid() != 0 or not shutil.which("linux.uml") or not shutil.which("ipvsadm"):
        return {"skipped": "needs root, user-mode-linux and ipvsadm (make sysdeps)"}
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        result_file = Path(tmp) / "kernel.json"
        cmd = f"{sys.executable} -m bench.proxy --kernel --json {result_file}"
        run = subprocess.run(
            [str(harness), "-t", "1500", "-m", "2048M", "-c", cmd],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        if run.returncode != 0 or not result_file.exists():
            return {"failed": f"uml-run exit {run.returncode}", "output": run.stdout[-2000:]}
        figures: dict[str, Any] = json.loads(result_file.read_text())
        figures["note"] = "measured inside user-mode-linux (guest syscalls are 3-8x slower)"
        return figures


def measure() -> dict[str, Any]:
    return {"fake backend": fake_figures(), "kernel (UML)": kernel_figures_via_uml()}


async def main(report: Any) -> None:
    """Entry for ``python -m bench`` (bench/report.py's Report)."""
    figures = await asyncio.to_thread(measure)
    report_figures(report, figures)


def _change_rows(section: Any, figures: dict[str, Any], services: int) -> None:
    change = figures["one change: update + partial plan + apply"]
    full = figures["baseline: no-op full plan of all services"]
    section.row(
        f"one Service changed among {services:,}: update + plan + apply, p50 / p99 / max",
        f"{change['p50_ms']:.2f} / {change['p99_ms']:.2f} / {change['max_ms']:.2f} ms "
        f"({figures['operations per change'][0]} IPVS ops, n={change['n']})",
        target="<= 20 ms",
        baseline=f"a no-op full plan of all {services:,} (no I/O): p50 {full['p50_ms']:.0f} ms",
        ok=change["p99_ms"] <= 20,
    )


def report_figures(report: Any, figures: dict[str, Any]) -> None:
    fake = figures["fake backend"]
    section = report.section(
        "Proxy, fake backend (in-process)",
        note="Services x 3 endpoints programmed into the in-memory IpvsBackend.",
    )
    _change_rows(section, fake, fake["services"])
    section.row(
        f"program {fake['services']:,} x 3 from empty",
        f"{fake['full program from empty (fake) s']} s",
    )

    kernel = figures["kernel (UML)"]
    section = report.section(
        "Proxy, real kernel IPVS (in user-mode-linux)",
        note="Measured inside UML (kernel "
        f"{kernel.get('kernel', '?')}): guest syscalls are several times slower than on "
        "a real kernel; ipvsadm runs in the same guest, on the same state.",
    )
    if "skipped" in kernel or "failed" in kernel:
        section.row("kernel figures", kernel.get("skipped") or kernel.get("failed"))
        return
    _change_rows(section, kernel, kernel["services for one change"])
    n = kernel["services for resync"]
    sn = kernel[f"baseline: ipvsadm -Sn of the same {n}x3 s"]
    section.row(
        f"full resync of {n:,} Services x 3 endpoints from empty",
        f"{kernel[f'full resync {n}x3 from empty s']:.2f} s "
        f"({kernel['operations from empty']} operations)",
        baseline=f"ipvsadm -R of the same rules (+ ip -batch of the VIPs): "
        f"{kernel[f'baseline: ipvsadm -R of {n}x3 s']:.2f} s; ipvsadm -Sn: {sn:.2f} s",
    )
    section.row(
        f"no-op full resync of {n:,} x 3 (read back + plan, 0 operations)",
        f"{kernel[f'no-op full resync {n}x3 s']:.2f} s",
        baseline=f"ipvsadm -Sn of the same state: {sn:.2f} s",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kernel", action="store_true", help="measure the kernel (in UML)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--fake-only", action="store_true")
    parser.add_argument("--change-services", type=int, default=10_000)
    parser.add_argument("--resync-services", type=int, default=1000)
    ns = parser.parse_args()
    if ns.kernel:
        result: dict[str, Any] = kernel_figures(ns.resync_services, ns.change_services)
    elif ns.fake_only:
        result = {"fake backend": fake_figures()}
    else:
        result = measure()
    text = json.dumps(result, indent=2)
    if ns.json:
        Path(ns.json).write_text(text)
    print(text)
