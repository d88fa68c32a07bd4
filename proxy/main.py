"""``minik8s proxy``: Services and EndpointSlices -> IPVS on this node.

``--dry-run`` prints the plan once (against the kernel's IPVS state when it can be read,
else against an empty one) and needs neither root nor IPVS.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from minik8s.client import ApiClient
    from proxy.desired import ProxyConfig

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig to use (default: $KUBECONFIG, ~/.minik8s)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan once and exit; changes nothing"
    )
    parser.add_argument(
        "--service-cidr",
        default="10.96.0.0/12",
        help="the ClusterIP range(s) the proxy owns, comma-separated (default 10.96.0.0/12)",
    )
    parser.add_argument(
        "--cleanup",
        action="store_true",
        help="remove what the proxy programmed (IPVS services and VIPs in the service CIDR, "
        "then kube-ipvs0 if it is left empty) and exit",
    )
    parser.add_argument("--scheduler", default="rr", help="IPVS scheduler (default rr)")
    parser.add_argument(
        "--min-sync-period",
        type=float,
        default=1.0,
        help="seconds between two syncs at least; changes meanwhile are batched (default 1)",
    )
    parser.add_argument(
        "--sync-period",
        type=float,
        default=30.0,
        help="seconds between full resyncs that repair drift in the kernel (default 30)",
    )
    parser.add_argument(
        "--metrics-bind-address",
        default="127.0.0.1:10249",
        help="HOST:PORT to serve /metrics on; empty to disable (default 127.0.0.1:10249)",
    )


def run(args: argparse.Namespace) -> int:
    from minik8s.client import ApiClient, ClientError

    if not getattr(args, "verbose", False):
        # One line per watch request is noise at INFO; our own logs say what happened.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    from minik8s.config import KubeconfigError
    from proxy.desired import ProxyConfig

    try:
        config = ProxyConfig.from_strings(args.service_cidr.split(","), args.scheduler)
    except ValueError as exc:
        print(f"minik8s proxy: {exc}", file=sys.stderr)
        return 2
    if args.cleanup:
        return _cleanup(config)
    try:
        api = ApiClient.from_kubeconfig(args.kubeconfig)
    except KubeconfigError as exc:
        print(f"minik8s proxy: {exc}", file=sys.stderr)
        return 1
    try:
        if args.dry_run:
            return asyncio.run(_dry_run(api, config))
        return _serve(api, config, args)
    except ClientError as exc:
        print(f"minik8s proxy: {exc}", file=sys.stderr)
        return 1


def _cleanup(config: ProxyConfig) -> int:
    from proxy.ipvs import IpvsError, KernelBackend
    from proxy.plan import ApplyError, apply, plan
    from proxy.state import IpvsState

    try:
        backend = KernelBackend()
    except IpvsError as exc:
        print(f"minik8s proxy: {exc}", file=sys.stderr)
        return 1
    try:
        ops = plan(IpvsState(), backend.read_state(), config.owns)
        apply(ops, backend)
        removed = backend.remove_interface_if_empty()
    except (IpvsError, ApplyError) as exc:
        print(f"minik8s proxy: cleanup failed: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()
    for op in ops:
        print(op)
    if removed:
        print(f"deleted interface {backend.interface}")
    return 0


async def _dry_run(api: ApiClient, config: ProxyConfig) -> int:
    from proxy.ipvs import KernelBackend
    from proxy.runner import dry_run

    async with api:
        ops, source = await dry_run(api, config, KernelBackend)
    print(f"# plan against {source}: {len(ops)} operation(s)")
    for op in ops:
        print(op)
    return 0


def _serve(api: ApiClient, config: ProxyConfig, args: argparse.Namespace) -> int:
    from proxy.ipvs import IpvsError, IpvsUnavailable, KernelBackend
    from proxy.metrics import ProxyMetrics
    from proxy.runner import ProxyRunner

    if os.geteuid() != 0:
        print(
            "minik8s proxy: programming IPVS needs root (CAP_NET_ADMIN); "
            "run it as root, or use --dry-run to see the plan",
            file=sys.stderr,
        )
        return 1
    # Fail fast, with the reason, where the kernel cannot do IPVS at all.
    try:
        KernelBackend().close()
    except IpvsUnavailable as exc:
        print(f"minik8s proxy: {exc}", file=sys.stderr)
        return 1
    except IpvsError as exc:
        print(f"minik8s proxy: cannot use IPVS: {exc}", file=sys.stderr)
        return 1

    metrics = ProxyMetrics()
    if args.metrics_bind_address:
        from prometheus_client import start_http_server

        host, _, port = args.metrics_bind_address.rpartition(":")
        try:
            server, _ = start_http_server(
                int(port), addr=host or "127.0.0.1", registry=metrics.registry
            )
        except (OSError, ValueError) as exc:
            logger.warning(
                "not serving metrics on %s (%s); pick another --metrics-bind-address",
                args.metrics_bind_address,
                exc,
            )
        else:
            bound_host, bound_port = server.server_address[:2]
            logger.info("serving metrics on http://%s:%s/metrics", bound_host, bound_port)
    runner = ProxyRunner(
        api,
        KernelBackend,
        config,
        min_sync_period=args.min_sync_period,
        sync_period=args.sync_period,
        metrics=metrics,
    )

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        logger.info(
            "proxy: service CIDR %s, scheduler %s, sync every %.0fs (at least %.1fs apart)",
            ",".join(str(c) for c in config.service_cidrs),
            config.scheduler,
            args.sync_period,
            args.min_sync_period,
        )
        async with api:
            await runner.run()

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        logger.info("proxy stopped")
    except IpvsError as exc:
        print(f"minik8s proxy: {exc}", file=sys.stderr)
        return 1
    return 0
