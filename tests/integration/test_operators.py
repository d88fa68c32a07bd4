"""The service and endpoint operators against a real apiserver, run as ``minik8s operators``.

The test plays the kubelet: it writes pods' ``status`` (podIP, Ready) through the
``pods/status`` subresource, as a node agent would.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from minik8s.client import ApiClient, ApiError, ApiUnreachable, Invalid, NotFound
from operators.transport import AiohttpApiClient
from tests.support.operators import RunningOperators, running_operators
from tests.support.server import RunningApiserver, running_apiserver

REPO = Path(__file__).resolve().parents[2]
CIDR = "10.96.0.0/22"
SWEEP = ("--sweep-interval", "1", "--claim-grace", "5")
OWNER_UID = "ipallocator.minik8s.io/service-uid"  # the Service object a claim is for
T = TypeVar("T")

# The seed's manifests (examples/pod-example.yaml, examples/service.yaml), as a fallback
# while those files are not in the tree; the volumes are left out (no kubelet here). The
# seed named both of the downloader's ports "nginx"; the apiserver refuses duplicate port
# names (as upstream does), so the second one is renamed and "nginx" means 6800.
SEED_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "pod", "labels": {"app": "nginx"}},
    "spec": {
        "containers": [
            {
                "name": "viewer",
                "image": "dplsming/nginx-fileserver:1.0",
                "ports": [{"containerPort": 80}],
            },
            {
                "name": "downloader",
                "image": "dplsming/aria2ng-downloader:1.0",
                "ports": [
                    {"name": "nginx", "containerPort": 6800},
                    {"name": "bt", "containerPort": 6880},
                ],
            },
        ]
    },
}
SEED_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "my-service"},
    "spec": {
        "type": "ClusterIP",
        "selector": {"app": "nginx"},
        "ports": [{"name": "my-port", "protocol": "TCP", "port": 8080, "targetPort": "nginx"}],
    },
}


def _example(name: str, fallback: dict[str, Any]) -> dict[str, Any]:
    path = REPO / "examples" / name
    if not path.exists():
        return fallback
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return dict(docs[0])


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[RunningApiserver, RunningOperators]]:
    with running_apiserver() as server:
        with running_operators(
            server.kubeconfig, "--service-cidr", CIDR, *SWEEP, url=server.url
        ) as op:
            yield server, op


@pytest.fixture
async def api(cluster: tuple[RunningApiserver, RunningOperators]) -> AsyncIterator[ApiClient]:
    async with ApiClient.from_kubeconfig(cluster[0].kubeconfig) as client:
        yield client


@pytest.fixture
async def namespace(api: ApiClient) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    await api.create(
        "v1", "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:  # noqa: ASYNC109
    """Poll ``check`` until it returns without an AssertionError (or the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except (AssertionError, pytest.fail.Exception):  # pytest.raises fails with the latter
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.02)


async def make_pod(
    api: ApiClient,
    ns: str,
    name: str,
    *,
    labels: dict[str, str],
    ip: str | None,
    ready: bool = True,
    ports: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if body is None:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "nginx", "ports": ports or []}]},
        }
    await api.create("v1", "pods", body, ns)
    return await set_pod_status(api, ns, body["metadata"]["name"], ip=ip, ready=ready)


async def set_pod_status(
    api: ApiClient, ns: str, name: str, *, ip: str | None, ready: bool
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}] if ip else None,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    return await api.patch("v1", "pods", name, {"status": status}, ns, subresource="status")


async def slices_of(api: ApiClient, ns: str, service: str) -> list[dict[str, Any]]:
    items, _ = await api.list(
        "discovery.k8s.io/v1",
        "endpointslices",
        ns,
        label_selector=f"kubernetes.io/service-name={service}",
    )
    return items


async def endpoints_of(
    api: ApiClient, ns: str, service: str
) -> dict[tuple[str, int], dict[str, bool]]:
    """(address, port) -> conditions, over every slice of the Service."""
    out: dict[tuple[str, int], dict[str, bool]] = {}
    for s in await slices_of(api, ns, service):
        for ep in s.get("endpoints") or []:
            for port in s.get("ports") or []:
                out[(ep["addresses"][0], port["port"])] = ep["conditions"]
    return out


def service_body(
    name: str, selector: dict[str, str], target: int | str = 8080, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": target}],
            **spec,
        },
    }


async def test_seed_service_has_its_cluster_ip_in_the_create_response_and_a_slice_with_the_pod(
    api: ApiClient, namespace: str
) -> None:
    pod = _example("pod-example.yaml", SEED_POD)
    service = _example("service.yaml", SEED_SERVICE)
    pod["metadata"].pop("namespace", None)
    service["metadata"].pop("namespace", None)
    await make_pod(api, namespace, "", labels={}, ip="10.2.16.5", body=pod)

    created = await api.create("v1", "services", service, namespace)

    ip = created["spec"]["clusterIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(CIDR)
    assert created["spec"]["clusterIPs"] == [ip]
    claim = await api.get("networking.k8s.io/v1", "ipaddresses", ip)
    assert claim["spec"]["parentRef"]["name"] == service["metadata"]["name"]
    assert claim["spec"]["parentRef"]["namespace"] == namespace
    port = service["spec"]["ports"][0]

    async def slice_has_pod() -> None:
        slices = await slices_of(api, namespace, service["metadata"]["name"])
        assert len(slices) == 1, slices
        slice_ = slices[0]
        assert [e["addresses"] for e in slice_["endpoints"]] == [["10.2.16.5"]]
        # "nginx" is 6800 (the seed's second "nginx" port, 6880, had to be renamed)
        assert slice_["ports"] == [{"name": port["name"], "port": 6800, "protocol": "TCP"}]
        assert slice_["endpoints"][0]["conditions"]["ready"] is True
        assert slice_["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == (
            "endpointslice-controller.minik8s.io"
        )
        assert (
            "endpoints.kubernetes.io/last-change-trigger-time" in slice_["metadata"]["annotations"]
        )
        assert slice_["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]

    await eventually(slice_has_pod)

    async def endpoints_object() -> None:
        try:
            ep = await api.get("v1", "endpoints", service["metadata"]["name"], namespace)
        except NotFound:
            raise AssertionError("no Endpoints yet") from None
        assert ep["subsets"][0]["addresses"][0]["ip"] == "10.2.16.5"
        assert ep["subsets"][0]["ports"][0]["port"] == 6800

    await eventually(endpoints_object)


async def test_pod_churn_is_followed(api: ApiClient, namespace: str) -> None:
    await api.create("v1", "services", service_body("web", {"app": "web"}), namespace)
    await make_pod(api, namespace, "a", labels={"app": "web"}, ip="10.2.0.1")
    await make_pod(api, namespace, "b", labels={"app": "web"}, ip="10.2.0.2")
    await make_pod(api, namespace, "pending", labels={"app": "web"}, ip=None)

    async def expect(want: dict[tuple[str, int], dict[str, bool]]) -> None:
        async def check() -> None:
            assert await endpoints_of(api, namespace, "web") == want

        await eventually(check)

    up = {"ready": True, "serving": True, "terminating": False}
    down = {"ready": False, "serving": False, "terminating": False}
    await expect({("10.2.0.1", 8080): up, ("10.2.0.2", 8080): up})

    await set_pod_status(api, namespace, "a", ip="10.2.0.1", ready=False)  # not ready
    await expect({("10.2.0.1", 8080): down, ("10.2.0.2", 8080): up})

    await api.patch(
        "v1", "pods", "b", {"metadata": {"labels": {"app": "other"}}}, namespace
    )  # relabelled
    await expect({("10.2.0.1", 8080): down})

    await set_pod_status(api, namespace, "pending", ip="10.2.0.3", ready=True)  # got its IP
    await expect({("10.2.0.1", 8080): down, ("10.2.0.3", 8080): up})

    await set_pod_status(api, namespace, "a", ip=None, ready=False)  # lost its IP
    await expect({("10.2.0.3", 8080): up})

    await api.delete("v1", "pods", "pending", namespace)  # deleted
    await expect({})
    [placeholder] = await slices_of(api, namespace, "web")
    assert placeholder["endpoints"] in ([], None)

    async def endpoints_empty() -> None:
        try:
            ep = await api.get("v1", "endpoints", "web", namespace)
        except NotFound:
            raise AssertionError("no Endpoints yet") from None
        assert not ep.get("subsets")

    await eventually(endpoints_empty)


async def test_service_selector_and_port_changes_are_followed(
    api: ApiClient, namespace: str
) -> None:
    await make_pod(
        api,
        namespace,
        "a",
        labels={"app": "a"},
        ip="10.3.0.1",
        ports=[{"name": "web", "containerPort": 9090}],
    )
    await make_pod(
        api,
        namespace,
        "b",
        labels={"app": "b"},
        ip="10.3.0.2",
        ports=[{"name": "web", "containerPort": 9191}],
    )
    await api.create("v1", "services", service_body("svc", {"app": "a"}), namespace)

    async def expect(want: set[tuple[str, int]]) -> None:
        async def check() -> None:
            assert set(await endpoints_of(api, namespace, "svc")) == want

        await eventually(check)

    await expect({("10.3.0.1", 8080)})
    await api.patch("v1", "services", "svc", {"spec": {"selector": {"app": "b"}}}, namespace)
    await expect({("10.3.0.2", 8080)})
    ports = [{"name": "http", "port": 80, "targetPort": "web"}]
    await api.patch(
        "v1", "services", "svc", {"spec": {"ports": ports, "selector": {"app": "a"}}}, namespace
    )
    await expect({("10.3.0.1", 9090)})


async def test_pod_without_the_named_port_is_left_out_with_an_event(
    api: ApiClient, namespace: str
) -> None:
    await make_pod(
        api,
        namespace,
        "has",
        labels={"app": "x"},
        ip="10.4.0.1",
        ports=[{"name": "web", "containerPort": 9000}],
    )
    await make_pod(api, namespace, "lacks", labels={"app": "x"}, ip="10.4.0.2")
    await api.create("v1", "services", service_body("x", {"app": "x"}, target="web"), namespace)

    async def check() -> None:
        assert set(await endpoints_of(api, namespace, "x")) == {("10.4.0.1", 9000)}
        events, _ = await api.list("v1", "events", namespace)
        messages = [
            e.get("message", "") for e in events if e.get("reason") == "FailedToResolveTargetPort"
        ]
        assert any("pod lacks has no container port named 'web'" in m for m in messages), messages

    await eventually(check)


async def test_deleting_a_service_frees_its_address_and_its_slices(
    api: ApiClient, namespace: str
) -> None:
    created = await api.create("v1", "services", service_body("gone", {"app": "gone"}), namespace)
    ip = created["spec"]["clusterIP"]
    await eventually(lambda: _assert_nonempty(slices_of(api, namespace, "gone")))

    await api.delete("v1", "services", "gone", namespace)

    async def freed() -> None:
        with pytest.raises(NotFound):
            await api.get("networking.k8s.io/v1", "ipaddresses", ip)
        assert await slices_of(api, namespace, "gone") == []

    await eventually(freed)
    again = await api.create(
        "v1", "services", service_body("again", {"app": "x"}, clusterIP=ip), namespace
    )
    assert again["spec"]["clusterIP"] == ip


async def _assert_nonempty(items: Awaitable[list[Any]]) -> None:
    assert await items


async def unclaimed_address(api: ApiClient, start: str) -> str:
    """The first address from ``start`` on that no claim holds: the Services of earlier
    tests in this cluster got random ones, which a fixed address could collide with."""
    items, _ = await api.list("networking.k8s.io/v1", "ipaddresses")
    taken = {item["metadata"]["name"] for item in items}
    ip = ipaddress.ip_address(start)
    while str(ip) in taken:
        ip += 1
    assert ip in ipaddress.ip_network(CIDR)
    return str(ip)


async def test_requested_cluster_ip_is_claimed_or_refused_with_the_reason(
    api: ApiClient, namespace: str
) -> None:
    ip = await unclaimed_address(api, "10.96.3.200")
    created = await api.create(
        "v1", "services", service_body("mine", {"a": "b"}, clusterIP=ip), namespace
    )
    assert created["spec"]["clusterIP"] == ip
    with pytest.raises(ApiError) as in_use:
        await api.create(
            "v1", "services", service_body("theirs", {"a": "b"}, clusterIP=ip), namespace
        )
    assert f"{ip} is already allocated to Service {namespace}/mine" in in_use.value.message
    with pytest.raises(ApiError) as out_of_range:
        await api.create(
            "v1", "services", service_body("far", {"a": "b"}, clusterIP="192.168.0.1"), namespace
        )
    assert f"not in the service CIDR {CIDR}" in out_of_range.value.message


async def test_headless_service_gets_no_address(api: ApiClient, namespace: str) -> None:
    created = await api.create(
        "v1", "services", service_body("headless", {"a": "b"}, clusterIP="None"), namespace
    )
    assert created["spec"]["clusterIP"] == "None"
    items, _ = await api.list("networking.k8s.io/v1", "ipaddresses")
    assert not [i for i in items if i["spec"]["parentRef"].get("namespace") == namespace]


async def test_an_orphaned_claim_is_swept_after_its_grace_period(api: ApiClient) -> None:
    ip = await unclaimed_address(api, "10.96.3.250")
    body = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {
            "name": ip,
            "labels": {"ipaddress.kubernetes.io/managed-by": "ipallocator.minik8s.io"},
        },
        "spec": {
            "parentRef": {
                "group": "",
                "resource": "services",
                "namespace": "default",
                "name": "never-stored",
            }
        },
    }
    await api.create("networking.k8s.io/v1", "ipaddresses", body)

    async def swept() -> None:
        with pytest.raises(NotFound):
            await api.get("networking.k8s.io/v1", "ipaddresses", ip)

    await eventually(swept, timeout=15)


def kopf_state(obj: dict[str, Any]) -> list[str]:
    """What kopf would have written on an object: annotations, finalizers, status."""
    meta = obj.get("metadata") or {}
    found = [a for a in meta.get("annotations") or {} if "kopf" in a]
    found += [f for f in meta.get("finalizers") or [] if "kopf" in f]
    found += ["status.kopf"] if "kopf" in (obj.get("status") or {}) else []
    return found


async def test_services_stored_without_an_address_get_one_and_no_service_carries_kopf_state() -> (
    None
):
    with running_apiserver() as server:
        async with ApiClient.from_kubeconfig(server.kubeconfig) as api:

            def allocated(name: str) -> Callable[[], Awaitable[dict[str, Any]]]:
                async def check() -> dict[str, Any]:
                    svc = await api.get("v1", "services", name, "default")
                    assert svc["spec"].get("clusterIP"), svc["spec"]
                    return svc

                return check

            # stored while no operator runs: allocated when the operators start
            early = await api.create("v1", "services", service_body("early", {"a": "b"}), "default")
            assert not early["spec"].get("clusterIP")
            with running_operators(
                server.kubeconfig, "--no-webhook", "--service-cidr", CIDR, url=server.url
            ):
                await eventually(allocated("early"))
                # stored while the operators run, without the webhook: allocated after
                late = await api.create(
                    "v1", "services", service_body("late", {"a": "b"}), "default"
                )
                assert not late["spec"].get("clusterIP")
                await eventually(allocated("late"))

            with running_operators(
                server.kubeconfig, "--service-cidr", CIDR, url=server.url
            ) as operators:
                admitted = await api.create(
                    "v1", "services", service_body("admitted", {"a": "b"}), "default"
                )
                assert admitted["spec"].get("clusterIP")
                # its events handled (its EndpointSlice written) before the operators stop
                await eventually(lambda: _assert_nonempty(slices_of(api, "default", "admitted")))
                operators.stop()

            # nothing more can be written: every address is claimed for its Service, and
            # kopf left no trace (the webhook's Service was written once, by its creator)
            services = {n: await api.get("v1", "services", n, "default") for n in _NAMES}
            ips = [svc["spec"]["clusterIP"] for svc in services.values()]
            assert len(set(ips)) == 3
            for name, svc in services.items():
                claim = await api.get(
                    "networking.k8s.io/v1", "ipaddresses", svc["spec"]["clusterIP"]
                )
                assert claim["spec"]["parentRef"]["name"] == name
                assert kopf_state(svc) == [], (name, svc["metadata"])
            stored = services["admitted"]["metadata"]["resourceVersion"]
            assert stored == admitted["metadata"]["resourceVersion"]


_NAMES = ("early", "late", "admitted")


async def test_exhausted_range_is_a_clear_error() -> None:
    with running_apiserver() as server:
        with running_operators(server.kubeconfig, "--service-cidr", "10.99.0.0/29", url=server.url):
            async with ApiClient.from_kubeconfig(server.kubeconfig) as api:
                for i in range(6):
                    await api.create("v1", "services", service_body(f"s{i}", {"a": "b"}), "default")
                with pytest.raises(ApiError) as exhausted:
                    await api.create(
                        "v1", "services", service_body("one-too-many", {"a": "b"}), "default"
                    )
                assert (
                    "no free ClusterIP left in service CIDR 10.99.0.0/29" in exhausted.value.message
                )


async def _create_services(api: ApiClient, names: list[str], clients: int) -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for name in names:
        queue.put_nowait(name)

    async def client() -> None:
        while not queue.empty():
            name = queue.get_nowait()
            for _ in range(50):
                try:
                    await api.create("v1", "services", service_body(name, {"app": name}), "default")
                    break
                except (
                    ApiError
                ) as exc:  # a webhook call cut by a kill -9: retry as kubectl's user would
                    if "AlreadyExists" in exc.reason:
                        break
                    await asyncio.sleep(0.05)

    await asyncio.gather(*(client() for _ in range(clients)))


async def _assert_distinct_and_claimed(api: ApiClient, count: int) -> None:
    services, _ = await api.list("v1", "services", "default")
    ours = [s for s in services if s["metadata"]["name"].startswith("s-")]
    assert len(ours) == count
    ips = [s["spec"].get("clusterIP") for s in ours]
    assert all(ips), [s["metadata"]["name"] for s in ours if not s["spec"].get("clusterIP")]
    assert len(set(ips)) == count
    claims, _ = await api.list("networking.k8s.io/v1", "ipaddresses")
    held = {
        s["spec"]["clusterIP"]: s["metadata"]["name"]
        for s in services
        if s["spec"].get("clusterIP")
    }
    owners = {c["metadata"]["name"]: c["spec"]["parentRef"]["name"] for c in claims}
    assert owners == held  # every address claimed by its Service, and no claim without one


async def test_two_replicas_give_500_services_500_distinct_addresses() -> None:
    with running_apiserver() as server:
        # no webhook: every Service is allocated after it is stored, by both replicas at
        # once (two claimants per Service), from 1022 addresses (collisions happen)
        common = (
            "--no-webhook",
            "--controllers",
            "services",
            "--service-cidr",
            "10.100.0.0/22",
            *SWEEP,
        )
        with (
            running_operators(server.kubeconfig, *common, url=server.url),
            running_operators(server.kubeconfig, *common, url=server.url),
        ):
            async with ApiClient.from_kubeconfig(server.kubeconfig) as api:
                await _create_services(api, [f"s-{i:03}" for i in range(500)], clients=10)
                await eventually(lambda: _assert_distinct_and_claimed(api, 500), timeout=90)


async def test_kill_9_of_a_replica_mid_run_leaves_no_duplicate_and_no_orphan() -> None:
    with running_apiserver() as server:
        common = ("--controllers", "services", "--service-cidr", "10.100.0.0/22", *SWEEP)
        with running_operators(server.kubeconfig, "--no-webhook", *common, url=server.url):
            with running_operators(server.kubeconfig, *common, url=server.url) as victim:
                async with ApiClient.from_kubeconfig(server.kubeconfig) as api:
                    names = [f"s-{i:03}" for i in range(300)]
                    creating = asyncio.create_task(_create_services(api, names, clients=10))

                    async def some_created() -> None:
                        services, _ = await api.list("v1", "services", "default")
                        assert len(services) >= 100

                    await eventually(some_created, timeout=30)
                    victim.kill()
                    await creating
                    await eventually(lambda: _assert_distinct_and_claimed(api, 300), timeout=90)


async def test_invalid_patch_is_422(api: ApiClient) -> None:
    """The fallback's resourceVersion test relies on a failed JSON-patch test being 422."""
    await api.create("v1", "services", service_body("rv", {"a": "b"}), "default")
    with pytest.raises(Invalid):
        await api.patch(
            "v1",
            "services",
            "rv",
            [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}],
            "default",
            patch_type="json",
        )


async def test_the_operators_client_answers_as_the_api_client(
    api: ApiClient, cluster: tuple[RunningApiserver, RunningOperators], namespace: str
) -> None:
    """AiohttpApiClient (the operators' requests without httpx) keeps ApiClient's contract."""

    async def outcome(call: Awaitable[Any]) -> tuple[str, str]:
        try:
            result = await call
        except ApiError as exc:
            return type(exc).__name__, exc.message
        return "ok", str(sorted(result)) if isinstance(result, dict) else str(result)

    async with AiohttpApiClient.from_kubeconfig(cluster[0].kubeconfig) as fast:
        body = service_body("both", {"a": "b"})
        created = await fast.create("v1", "services", body, namespace)
        assert created["spec"]["clusterIP"]
        for client in (api, fast):
            assert await outcome(client.create("v1", "services", body, namespace)) == (
                "AlreadyExists",
                'services "both" already exists',
            )
            assert (await outcome(client.get("v1", "services", "nope", namespace)))[0] == "NotFound"
            assert (await outcome(client.get("v1", "nopes", "x", namespace)))[0] == "NotFound"
            items, rv = await client.list("v1", "services", namespace)
            assert [i["metadata"]["name"] for i in items] == ["both"] and rv
            test = [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}]
            assert (
                await outcome(
                    client.patch("v1", "services", "both", test, namespace, patch_type="json")
                )
            )[0] == "Invalid"
        patched = await fast.patch(
            "v1", "services", "both", {"metadata": {"labels": {"x": "y"}}}, namespace
        )
        assert patched["metadata"]["labels"] == {"x": "y"}
        deleted = await fast.delete(
            "v1", "services", "both", namespace, preconditions={"uid": created["metadata"]["uid"]}
        )
        assert deleted["metadata"]["name"] == "both"

    async with AiohttpApiClient("http://127.0.0.1:9", timeout=2) as down:
        with pytest.raises(ApiUnreachable):
            await down.get("v1", "services", "x", "default")


async def _recreate_and_check_the_claim(api: ApiClient, namespace: str, ip: str) -> None:
    body = service_body("again", {"a": "b"}, clusterIP=ip)
    await api.create("v1", "services", body, namespace)
    await api.delete("v1", "services", "again", namespace)
    again = await api.create("v1", "services", body, namespace)

    async def claimed_for_a_while() -> None:
        for _ in range(20):  # the old Service's release has long run by the end of this
            try:
                claim = await api.get("networking.k8s.io/v1", "ipaddresses", ip)
            except NotFound:
                raise AssertionError(f"{ip} is not claimed") from None
            assert claim["spec"]["parentRef"]["name"] == "again"
            assert claim["spec"]["parentRef"]["namespace"] == namespace
            # the claim records the new Service object, not the deleted one
            annotations = claim["metadata"].get("annotations") or {}
            assert annotations.get(OWNER_UID) == again["metadata"]["uid"], annotations
            await asyncio.sleep(0.1)

    await eventually(claimed_for_a_while)


async def test_recreating_a_service_with_its_address_keeps_the_claim(
    api: ApiClient, namespace: str
) -> None:
    await _recreate_and_check_the_claim(api, namespace, await unclaimed_address(api, "10.96.3.201"))


async def test_recreating_a_service_with_its_address_keeps_the_claim_without_the_webhook() -> None:
    """Stored without admission (as when the webhook call fails: failurePolicy Ignore), the
    new Service finds its deleted namesake's claim, takes it over, and keeps it."""
    with running_apiserver() as server:
        with running_operators(
            server.kubeconfig, "--no-webhook", "--service-cidr", CIDR, *SWEEP, url=server.url
        ):
            async with ApiClient.from_kubeconfig(server.kubeconfig) as api:
                await _recreate_and_check_the_claim(api, "default", "10.96.3.201")
