"""/openapi/v3 documents give kubectl what it needs to send fieldValidation=Strict."""

from __future__ import annotations

from typing import Any

from apiserver import openapi
from apiserver.resources import Resource, builtin_index


def patch_ops(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {path: item["patch"] for path, item in doc["paths"].items() if "patch" in item}


def test_index_lists_every_group_version_with_a_hash() -> None:
    index = builtin_index()
    root = openapi.root(index)
    assert set(root["paths"]) == {
        "api/v1",
        "apis/discovery.k8s.io/v1",
        "apis/networking.k8s.io/v1",
        "apis/coordination.k8s.io/v1",
    }
    url = root["paths"]["api/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/api/v1?hash=")
    assert openapi.root(index) == root, "the hash is stable while nothing changes"


def test_every_kind_has_a_patch_operation_with_gvk_and_field_validation() -> None:
    index = builtin_index()
    for res in index.all():
        path = "api/v1" if not res.group else f"apis/{res.group}/{res.version}"
        doc = openapi.document(index, path)
        assert doc is not None
        kinds = []
        for op in patch_ops(doc).values():
            names = [p["name"] for p in op["parameters"]]
            assert "fieldValidation" in names
            assert "requestBody" not in op, "kubectl must build SMPs from its own types"
            kinds.append(op["x-kubernetes-group-version-kind"]["kind"])
        assert res.kind in kinds


def test_namespace_patch_path_exists_for_the_crd_fallback() -> None:
    doc = openapi.document(builtin_index(), "api/v1")
    assert doc is not None
    op = doc["paths"]["/api/v1/namespaces/{name}"]["patch"]
    assert op["x-kubernetes-group-version-kind"] == {
        "group": "",
        "version": "v1",
        "kind": "Namespace",
    }
    assert op["operationId"] == "patchCoreV1Namespace"


def test_schemas_are_generated_from_the_models_with_wire_names() -> None:
    doc = openapi.document(builtin_index(), "api/v1")
    assert doc is not None
    schemas = doc["components"]["schemas"]
    service = schemas["io.k8s.api.core.v1.Service"]
    assert service["x-kubernetes-group-version-kind"] == [
        {"group": "", "kind": "Service", "version": "v1"}
    ]
    spec = schemas["io.k8s.api.core.v1.ServiceSpec"]["properties"]
    assert spec["clusterIP"] == {"type": "string"}
    assert spec["ports"]["x-kubernetes-patch-merge-key"] == "port"
    port = schemas["io.k8s.api.core.v1.ServicePort"]
    assert port["required"] == ["port"]
    target = port["properties"]["targetPort"]["$ref"].rsplit("/", 1)[1]
    assert schemas[target]["format"] == "int-or-string"
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in schemas


def test_custom_resources_get_documents_and_provider_schemas() -> None:
    index = builtin_index()
    widgets = Resource("example.com", "v1", "Widget", "widgets", "widget", namespaced=True)
    index.add(widgets)
    assert "apis/example.com/v1" in openapi.root(index)["paths"]

    def provider(res: Resource) -> dict[str, Any] | None:
        if res.kind != "Widget":
            return None
        return {"type": "object", "properties": {"spec": {"type": "object"}}}

    openapi.register_schema_provider(provider)
    try:
        doc = openapi.document(index, "apis/example.com/v1")
        assert doc is not None
        schema = doc["components"]["schemas"]["com.example.v1.Widget"]
        assert schema["properties"]["spec"] == {"type": "object"}
        assert schema["x-kubernetes-group-version-kind"][0]["kind"] == "Widget"
        assert "/apis/example.com/v1/namespaces/{namespace}/widgets/{name}" in doc["paths"]
    finally:
        openapi._SCHEMA_PROVIDERS.remove(provider)
        openapi.invalidate()


def test_unknown_group_version_is_none() -> None:
    assert openapi.document(builtin_index(), "apis/nope.io/v1") is None
