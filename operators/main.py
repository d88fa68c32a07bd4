"""``minik8s operators``: the service and endpoint operators in one kopf process.

For ``minik8s up`` (or a test) there is :func:`serve`, a coroutine that runs until
cancelled and sets ``ready`` once kopf has started; the webhook server listens on
loopback (plain HTTP) and kopf registers it in the MutatingWebhookConfiguration named
``--webhook-config`` (managed mode), so the apiserver calls it on every Service CREATE.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
"""Here, not imported from operators.ipam: the CLI builds every subcommand's parser, and
importing ipam (the API client, httpx) there cost ``minik8s up`` ~0.3 s."""
DEFAULT_WEBHOOK_CONFIG = "minik8s-operators.minik8s.io"
DEFAULT_SWEEP_INTERVAL = 30.0
DEFAULT_CLAIM_GRACE = 60.0
CONTROLLERS = ("services", "endpoints")


@dataclass(frozen=True, slots=True)
class OperatorOptions:
    kubeconfig: str | None = None
    service_cidr: str = DEFAULT_SERVICE_CIDR
    webhook: bool = True
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 0  # 0 = a free port, published in the webhook configuration
    webhook_config: str = DEFAULT_WEBHOOK_CONFIG
    standalone: bool = True
    peering: str | None = None
    sweep_interval: float = DEFAULT_SWEEP_INTERVAL
    claim_grace: float = DEFAULT_CLAIM_GRACE
    controllers: frozenset[str] = frozenset(CONTROLLERS)
    verbose: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig to use (default: $KUBECONFIG, ~/.minik8s)")
    parser.add_argument(
        "--service-cidr",
        default=DEFAULT_SERVICE_CIDR,
        help=f"range ClusterIPs are allocated from (default {DEFAULT_SERVICE_CIDR})",
    )
    parser.add_argument(
        "--webhook-host", default="127.0.0.1", help="address the admission webhook listens on"
    )
    parser.add_argument(
        "--webhook-port", type=int, default=0, help="admission webhook port (0: a free one)"
    )
    parser.add_argument(
        "--webhook-config",
        default=DEFAULT_WEBHOOK_CONFIG,
        help="name of the MutatingWebhookConfiguration kopf manages",
    )
    parser.add_argument(
        "--no-webhook",
        dest="webhook",
        action="store_false",
        help="no admission webhook: allocate after the Service is stored",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--standalone",
        dest="peering",
        action="store_const",
        const=None,
        help="run without kopf peering (default; replicas are safe: claims are atomic)",
    )
    mode.add_argument(
        "--peering", metavar="NAME", help="coordinate with other replicas via kopf peering NAME"
    )
    parser.add_argument(
        "--controllers",
        default=",".join(CONTROLLERS),
        help="which operators to run: services (ClusterIPs), endpoints, or both (default)",
    )
    parser.add_argument(
        "--sweep-interval",
        type=float,
        default=DEFAULT_SWEEP_INTERVAL,
        help="seconds between sweeps of orphaned ClusterIP claims",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        help="write this file once the operators run and their webhook is registered"
        " (minik8s up waits for it before it prints the kubeconfig)",
    )
    parser.add_argument(
        "--claim-grace",
        type=float,
        default=DEFAULT_CLAIM_GRACE,
        help="age in seconds before an unheld claim is orphaned (covers in-flight creates)",
    )


def options_from_args(args: argparse.Namespace) -> OperatorOptions:
    return OperatorOptions(
        kubeconfig=args.kubeconfig,
        service_cidr=args.service_cidr,
        webhook=args.webhook,
        webhook_host=args.webhook_host,
        webhook_port=args.webhook_port,
        webhook_config=args.webhook_config,
        standalone=args.peering is None,
        peering=args.peering,
        sweep_interval=args.sweep_interval,
        claim_grace=args.claim_grace,
        controllers=parse_controllers(args.controllers),
        verbose=bool(getattr(args, "verbose", False)),
    )


def parse_controllers(text: str) -> frozenset[str]:
    chosen = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = chosen - set(CONTROLLERS)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"--controllers {text!r}: choose from {', '.join(CONTROLLERS)} (comma-separated)"
        )
    return chosen


GC_THRESHOLDS = (700, 10, 100)
"""The collector's thresholds in ``minik8s operators``: the defaults, but a full
collection after 100 middle ones instead of 10. kopf keeps every watched object
(3,000 pods, 1,000 Services, their slices) in memory; with the defaults the operators
benchmark ran 11 full collections while that grew (1.8 s in all, up to 260 ms each),
some in the middle of admission reviews; with 100, one. The apiserver's (50,000, 20,
20) did worse here: kopf's young objects mostly survive, and each young collection
took ~90 ms."""


def run(args: argparse.Namespace) -> int:
    import gc

    from minik8s.config import KubeconfigError
    from operators.ipam import InvalidServiceCIDR

    gc.set_threshold(*GC_THRESHOLDS)

    try:
        options = options_from_args(args)
    except argparse.ArgumentTypeError as exc:
        logger.error("%s", exc)
        return 2
    try:
        asyncio.run(_serve_announcing(options, getattr(args, "ready_file", None)))
    except (KubeconfigError, InvalidServiceCIDR) as exc:
        logger.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


async def _serve_announcing(options: OperatorOptions, ready_file: Path | None) -> None:
    """``serve``, writing ``ready_file`` (if given) once the operators are ready."""
    if ready_file is None:
        await serve(options)
        return
    ready = asyncio.Event()

    async def announce() -> None:
        await ready.wait()
        await asyncio.to_thread(ready_file.write_text, "ready\n")

    announcing = asyncio.create_task(announce(), name="operators-ready-file")
    try:
        await serve(options, ready)
    finally:
        announcing.cancel()


async def serve(options: OperatorOptions, ready: asyncio.Event | None = None) -> None:
    """Run both operators (and the claim sweeper) until cancelled or stopped."""
    import kopf

    from minik8s.config import load_kubeconfig, resolve_kubeconfig_path
    from operators import endpoint_operator, ipam, persistence, service_operator
    from operators.transport import AiohttpApiClient

    network = ipam.parse_service_cidr(options.service_cidr)
    cluster = load_kubeconfig(options.kubeconfig)
    if not options.verbose:
        # kopf logs every handler run at INFO; keep our own outcomes, its warnings
        logging.getLogger("kopf").setLevel(logging.WARNING)
    for chatty in ("httpx", "aiohttp.access"):  # one line per request otherwise
        logging.getLogger(chatty).setLevel(logging.WARNING)

    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=cluster.server,
            token=cluster.token,
            scheme="Bearer" if cluster.token else None,
            ca_path=cluster.certificate_authority,
            insecure=cluster.insecure_skip_tls_verify or None,
            default_namespace=cluster.namespace,
        )

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        persistence.configure(settings)  # no kopf annotations on Services
        if webhook:
            settings.admission.server = kopf.WebhookServer(
                addr=options.webhook_host,
                port=options.webhook_port or None,
                insecure=True,
            )
            settings.admission.managed = options.webhook_config
        if options.peering:
            settings.peering.name = options.peering
            settings.peering.mandatory = True
            settings.peering.clusterwide = True

    api = AiohttpApiClient.from_kubeconfig(resolve_kubeconfig_path(options.kubeconfig))
    allocator = service_operator.ServiceAllocator(api, network)
    webhook = options.webhook and "services" in options.controllers
    if "services" in options.controllers:
        service_operator.register(registry, allocator, webhook=webhook)
    if "endpoints" in options.controllers:
        endpoint_operator.register(registry, endpoint_operator.EndpointReconciler(api))
    sweeper = service_operator.Sweeper(
        allocator, interval=options.sweep_interval, grace=options.claim_grace
    )

    ready_flag = asyncio.Event()
    logger.info(
        "operators (%s) starting against %s: ClusterIPs from %s, webhook %s",
        ", ".join(sorted(options.controllers)),
        cluster.server,
        network,
        f"{options.webhook_host} ({options.webhook_config})" if webhook else "off",
    )
    sweep_task = asyncio.create_task(
        sweeper.run() if "services" in options.controllers else asyncio.sleep(0),
        name="clusterip-sweeper",
    )
    ready_task = asyncio.create_task(
        _relay(ready_flag, ready, api, options.webhook_config if webhook else None),
        name="operators-ready",
    )
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=True,
            standalone=options.peering is None,
            peering_name=options.peering,
            ready_flag=ready_flag,
        )
    finally:
        for task in (sweep_task, ready_task):
            task.cancel()
        await asyncio.gather(sweep_task, ready_task, return_exceptions=True)
        await api.close()


async def _relay(
    source: asyncio.Event, target: asyncio.Event | None, api: Any, webhook_config: str | None
) -> None:
    """Set ``target`` once kopf runs and (with the webhook) its URL is registered."""
    from minik8s.client import ClientError

    await source.wait()
    while webhook_config is not None:
        try:
            config = await api.get(
                "admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", webhook_config
            )
        except ClientError:
            config = {}
        if any(
            (hook.get("clientConfig") or {}).get("url") for hook in config.get("webhooks") or []
        ):
            break
        await asyncio.sleep(0.05)
    logger.info("operators ready")
    if target is not None:
        target.set()
