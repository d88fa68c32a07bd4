"""The CustomResourceDefinition itself: defaults, validation, status, what it serves."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from apiserver.crd import (
    crd_status,
    custom_kind,
    default_crd,
    is_established,
    name_conflicts,
    validate_crd,
)

ROOT = Path(__file__).resolve().parents[2]


def crd(**spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets", "shortNames": ["wd"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"}
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                        },
                    }
                },
            }
        ],
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": spec,
    }


def test_defaults_fill_singular_list_kind_and_conversion() -> None:
    out = default_crd(crd())
    assert out["spec"]["names"]["singular"] == "widget"
    assert out["spec"]["names"]["listKind"] == "WidgetList"
    assert out["spec"]["conversion"] == {"strategy": "None"}


def test_a_valid_crd_has_no_errors() -> None:
    assert validate_crd(default_crd(crd())) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda c: c["metadata"].update(name="wrong"), "metadata.name"),
        (lambda c: c["spec"].update(group="nodots"), "spec.group"),
        (lambda c: c["spec"].update(scope="Galaxy"), "spec.scope"),
        (lambda c: c["spec"]["names"].update(plural="Widgets"), "spec.names.plural"),
        (lambda c: c["spec"]["names"].pop("kind"), "spec.names.kind"),
        (lambda c: c["spec"].update(versions=[]), "spec.versions"),
        (lambda c: c["spec"]["versions"][0].update(storage=False), "spec.versions"),
        (
            lambda c: c["spec"]["versions"][0].pop("schema"),
            "spec.versions[0].schema.openAPIV3Schema",
        ),
        (
            lambda c: c["spec"]["versions"][0]["additionalPrinterColumns"][0].update(type="float"),
            "spec.versions[0].additionalPrinterColumns[0].type",
        ),
        (
            lambda c: c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"].update(
                spec={"properties": {}}
            ),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type",
        ),
        (
            lambda c: c["spec"].update(conversion={"strategy": "Webhook"}),
            "spec.conversion.strategy",
        ),
    ],
)
def test_invalid_crds_name_the_field(change: Any, field: str) -> None:
    bad = crd()
    change(bad)
    assert field in [e.field for e in validate_crd(default_crd(bad))]


def test_two_storage_versions_are_refused() -> None:
    bad = crd()
    second = copy.deepcopy(bad["spec"]["versions"][0])
    second["name"] = "v2"
    bad["spec"]["versions"].append(second)
    assert "spec.versions" in [e.field for e in validate_crd(bad)]


def test_group_and_scope_are_immutable() -> None:
    old = default_crd(crd())
    new = default_crd(crd(scope="Cluster"))
    assert [e.field for e in validate_crd(new, old)] == ["spec.scope"]


def test_a_stored_version_cannot_be_dropped() -> None:
    old = default_crd(crd())
    old["status"] = {"storedVersions": ["v1"]}
    new = copy.deepcopy(old)
    new["spec"]["versions"][0]["name"] = "v2"
    assert "status.storedVersions[]" in [e.field for e in validate_crd(new, old)]


def test_status_accepts_names_and_establishes() -> None:
    c = default_crd(crd())
    c["status"] = crd_status(c, [])
    types = {cond["type"]: cond for cond in c["status"]["conditions"]}
    assert types["NamesAccepted"]["status"] == "True"
    assert types["NamesAccepted"]["reason"] == "NoConflicts"
    assert types["Established"]["status"] == "True"
    assert c["status"]["acceptedNames"]["plural"] == "widgets"
    assert c["status"]["storedVersions"] == ["v1"]
    assert is_established(c)


def test_a_kind_already_taken_in_the_group_is_not_accepted() -> None:
    first = default_crd(crd())
    first["status"] = crd_status(first, [])
    second = default_crd(crd(names={"kind": "Widget", "plural": "gadgets"}))
    second["metadata"]["name"] = "gadgets.example.com"
    conflicts = name_conflicts(second, [first])
    assert conflicts == ['"Widget" is already in use', '"widget" is already in use']
    second["status"] = crd_status(second, conflicts)
    assert not is_established(second)
    assert name_conflicts(first, [first]) == []


def test_served_versions_become_resources_with_their_columns() -> None:
    c = default_crd(crd())
    second = copy.deepcopy(c["spec"]["versions"][0])
    second.update(name="v1beta1", storage=False)
    second.pop("additionalPrinterColumns")
    second.pop("subresources")
    unserved = copy.deepcopy(second)
    unserved.update(name="v1alpha1", served=False)
    c["spec"]["versions"] += [second, unserved]
    kind = custom_kind(c)
    assert sorted(kind.versions) == ["v1", "v1beta1"]
    assert kind.storage_version == "v1"
    v1 = kind.versions["v1"]
    assert v1.resource.subresources == ("status",)
    assert v1.resource.short_names == ("wd",)
    assert v1.resource.list_kind_name == "WidgetList"
    assert v1.resource.namespaced
    assert [col["name"] for col in v1.printer_columns] == ["Size"]
    assert [col["name"] for col in kind.versions["v1beta1"].printer_columns] == ["Age"]
    assert kind.versions["v1beta1"].resource.subresources == ()


@pytest.mark.parametrize("path", sorted((ROOT / "crds").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_crds_are_valid(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        assert validate_crd(default_crd(doc)) == [], path


def test_versions_are_served_in_upstreams_priority_order() -> None:
    from apiserver.crd import version_priority

    names = ["v1alpha1", "v1beta1", "v2", "v1", "v1beta2", "foo", "v10"]
    assert sorted(names, key=version_priority) == [
        "v10",
        "v2",
        "v1",
        "v1beta2",
        "v1beta1",
        "v1alpha1",
        "foo",
    ]
    c = default_crd(crd())
    beta = copy.deepcopy(c["spec"]["versions"][0])
    beta.update(name="v1beta1", storage=False)
    c["spec"]["versions"].insert(0, beta)
    assert list(custom_kind(c).versions) == ["v1", "v1beta1"]
