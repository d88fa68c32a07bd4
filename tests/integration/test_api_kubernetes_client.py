"""The official kubernetes Python client, unmodified, against a real apiserver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.support.server import RunningApiserver, running_apiserver, shared_apiserver

__all__ = ["shared_apiserver"]


@pytest.fixture
def core(shared_apiserver: RunningApiserver) -> Iterator[client.CoreV1Api]:
    config = client.Configuration()
    config.host = shared_apiserver.url
    with client.ApiClient(config) as api:
        yield client.CoreV1Api(api)


def service(name: str) -> client.V1Service:
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=name, labels={"suite": "pyclient"}),
        spec=client.V1ServiceSpec(
            selector={"app": name}, ports=[client.V1ServicePort(port=80, target_port="http")]
        ),
    )


def test_create_and_list_with_typed_models(core: client.CoreV1Api) -> None:
    made = core.create_namespaced_service("default", service("py-list"))
    assert made.spec.type == "ClusterIP"
    assert made.spec.ports[0].target_port == "http"
    listed = core.list_namespaced_service("default", label_selector="suite=pyclient")
    assert "py-list" in [s.metadata.name for s in listed.items]
    assert int(listed.metadata.resource_version) >= int(made.metadata.resource_version)


def test_watch_and_resume_from_a_resource_version(core: client.CoreV1Api) -> None:
    start = core.list_namespaced_service("default").metadata.resource_version
    first = core.create_namespaced_service("default", service("py-w1"))
    second = core.create_namespaced_service("default", service("py-w2"))
    seen = []
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_service,
        "default",
        resource_version=start,
        field_selector="metadata.name=py-w1",
        timeout_seconds=5,
    ):
        seen.append((event["type"], event["object"].metadata.name))
        w.stop()
    assert seen == [("ADDED", "py-w1")]
    resumed = []
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_service,
        "default",
        resource_version=first.metadata.resource_version,
        label_selector="suite=pyclient",
        timeout_seconds=5,
    ):
        resumed.append(event["object"].metadata.resource_version)
        w.stop()
    assert resumed == [second.metadata.resource_version]


def test_expired_version_yields_410() -> None:
    with running_apiserver() as api:  # fresh: no watch history in memory yet
        config = client.Configuration()
        config.host = api.url
        with client.ApiClient(config) as raw:
            core = client.CoreV1Api(raw)
            old = core.create_namespaced_service("default", service("py-old"))
            core.create_namespaced_service("default", service("py-new"))
            newest = core.list_namespaced_service("default").metadata.resource_version
            api.call(api.app.state.api.registry.storage.compact(int(newest)))
            w = watch.Watch()
            with pytest.raises(ApiException) as caught:
                for _ in w.stream(
                    core.list_namespaced_service,
                    "default",
                    resource_version=old.metadata.resource_version,
                    timeout_seconds=5,
                ):
                    pass
            assert caught.value.status == 410


def test_not_found_is_an_api_exception_with_a_status_body(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_service("absent", "default")
    assert caught.value.status == 404
    assert '"reason":"NotFound"' in caught.value.body
