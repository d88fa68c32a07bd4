"""Custom objects against a CRD's openAPIV3Schema: pruning, defaulting, validation."""

from __future__ import annotations

from typing import Any

import pytest

from apiserver.schema import ObjectSchema, apply_defaults, check_schema, prune

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["image"],
            "properties": {
                "image": {"type": "string", "minLength": 1},
                "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
                "mode": {"type": "string", "enum": ["fast", "safe"]},
                "port": {"x-kubernetes-int-or-string": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "ports": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": {"type": "integer"},
                            "protocol": {"type": "string", "default": "TCP"},
                        },
                    },
                },
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "template": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": True,
                    "x-kubernetes-preserve-unknown-fields": True,
                },
                "note": {"type": "string", "nullable": True},
                "policy": {
                    "type": "object",
                    "default": {},
                    "properties": {"retries": {"type": "integer", "default": 3}},
                },
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


def obj(spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "default", "uid": "u"},
        "spec": spec,
        **extra,
    }


def test_unknown_fields_are_pruned_but_object_keys_are_kept() -> None:
    o = obj({"image": "x", "bogus": 1, "ports": [{"port": 1, "junk": True}]}, junk={"a": 1})
    prune(o, SCHEMA)
    assert o["spec"] == {"image": "x", "ports": [{"port": 1}]}
    assert "junk" not in o
    assert o["metadata"]["uid"] == "u"
    assert o["apiVersion"] == "example.com/v1"


def test_preserve_unknown_fields_keeps_the_subtree() -> None:
    o = obj({"image": "x", "extra": {"anything": {"deep": [1, 2]}}}, status={"whatever": 1})
    prune(o, SCHEMA)
    assert o["spec"]["extra"] == {"anything": {"deep": [1, 2]}}
    assert o["status"] == {"whatever": 1}


def test_map_values_are_kept_under_additional_properties() -> None:
    o = obj({"image": "x", "labels": {"a": "b"}})
    prune(o, SCHEMA)
    assert o["spec"]["labels"] == {"a": "b"}


def test_embedded_resource_keeps_object_keys_and_prunes_its_metadata() -> None:
    template = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "uid": "x"},
        "spec": {},
    }
    o = obj({"image": "x", "template": template})
    prune(o, SCHEMA)
    assert o["spec"]["template"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {},
    }


def test_defaults_are_applied_recursively_including_in_list_items() -> None:
    o = obj({"image": "x", "ports": [{"port": 80}]})
    apply_defaults(o, SCHEMA)
    assert o["spec"]["replicas"] == 1
    assert o["spec"]["ports"] == [{"port": 80, "protocol": "TCP"}]
    assert o["spec"]["policy"] == {"retries": 3}


def test_a_given_value_wins_over_the_default() -> None:
    o = obj({"image": "x", "replicas": 5})
    apply_defaults(o, SCHEMA)
    assert o["spec"]["replicas"] == 5


def test_null_in_a_non_nullable_field_is_dropped_then_defaulted() -> None:
    o = obj({"image": "x", "replicas": None, "mode": None, "note": None})
    apply_defaults(o, SCHEMA)
    assert o["spec"]["replicas"] == 1
    assert "mode" not in o["spec"]
    assert o["spec"]["note"] is None


def test_a_valid_object_has_no_errors() -> None:
    o = obj({"image": "x", "replicas": 3, "port": "http", "mode": "fast"})
    assert ObjectSchema(SCHEMA).admit(o) == []


def test_wrong_type_names_the_field_path() -> None:
    errors = ObjectSchema(SCHEMA).admit(obj({"image": "x", "replicas": "three"}))
    assert [(e.field, e.reason) for e in errors] == [("spec.replicas", "FieldValueTypeInvalid")]
    assert 'spec.replicas in body must be of type integer: "string"' in errors[0].message
    assert errors[0].message.startswith('Invalid value: "three"')


def test_a_float_is_not_an_integer() -> None:
    errors = ObjectSchema(SCHEMA).admit(obj({"image": "x", "replicas": 1.5}))
    assert [e.field for e in errors] == ["spec.replicas"]


def test_missing_required_field_is_a_required_value() -> None:
    errors = ObjectSchema(SCHEMA).admit(obj({"replicas": 2}))
    assert [(e.field, e.reason, e.message) for e in errors] == [
        ("spec.image", "FieldValueRequired", "Required value")
    ]


def test_bounds_enum_and_list_items_are_checked_with_paths() -> None:
    errors = ObjectSchema(SCHEMA).admit(
        obj({"image": "", "replicas": 11, "mode": "slow", "ports": [{"port": "x"}]})
    )
    by_field = {e.field: e for e in errors}
    assert set(by_field) == {"spec.image", "spec.replicas", "spec.mode", "spec.ports[0].port"}
    assert "should be less than or equal to 10" in by_field["spec.replicas"].message
    assert "should be at least 1 chars long" in by_field["spec.image"].message
    assert by_field["spec.mode"].reason == "FieldValueNotSupported"
    assert 'supported values: "fast", "safe"' in by_field["spec.mode"].message


def test_int_or_string_accepts_both_and_refuses_others() -> None:
    schema = ObjectSchema(SCHEMA)
    assert schema.admit(obj({"image": "x", "port": 8080})) == []
    assert schema.admit(obj({"image": "x", "port": "web"})) == []
    errors = schema.admit(obj({"image": "x", "port": True}))
    assert [e.field for e in errors] == ["spec.port"]


def test_embedded_resource_requires_api_version_and_kind() -> None:
    errors = ObjectSchema(SCHEMA).admit(obj({"image": "x", "template": {"spec": {}}}))
    assert {e.field for e in errors} == {"spec.template.apiVersion", "spec.template.kind"}


def test_metadata_is_not_validated_against_the_spec_schema() -> None:
    o = obj({"image": "x"})
    o["metadata"]["labels"] = {"a": "b"}
    assert ObjectSchema(SCHEMA).admit(o) == []


def test_metadata_name_constraints_in_the_schema_apply() -> None:
    schema = {
        "type": "object",
        "properties": {
            "metadata": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 3}},
            }
        },
    }
    errors = ObjectSchema(schema).admit(obj({}))
    assert errors == []
    long = obj({})
    long["metadata"]["name"] = "toolong"
    assert [e.field for e in ObjectSchema(schema).admit(long)] == ["metadata.name"]


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ({"properties": {}}, "s.type"),
        ({"type": "string"}, "s.type"),
        ({"type": "object", "properties": {"a": {}}}, "s.properties[a].type"),
        ({"type": "object", "properties": {"a": {"type": "array"}}}, "s.properties[a].items"),
        ({"type": "object", "properties": {"a": {"type": "wat"}}}, "s.properties[a].type"),
        (
            {"type": "object", "properties": {"a": {"type": "integer", "default": "x"}}},
            "s.properties[a].default",
        ),
        (
            {"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}},
            "s.properties[a].pattern",
        ),
    ],
)
def test_non_structural_schemas_are_refused(schema: dict[str, Any], field: str) -> None:
    assert field in [e.field for e in check_schema(schema, "s")]


def test_a_structural_schema_passes_its_check() -> None:
    assert check_schema(SCHEMA, "s") == []


def test_known_formats_are_checked() -> None:
    schema = ObjectSchema(
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "at": {"type": "string", "format": "date-time"},
                        "ip": {"type": "string", "format": "ipv4"},
                    },
                }
            },
        }
    )
    assert schema.admit(obj({"at": "2026-11-26T03:39:42Z", "ip": "10.0.0.1"})) == []
    errors = schema.admit(obj({"at": "yesterday", "ip": "10.0.0.300"}))
    assert [e.field for e in errors] == ["spec.at", "spec.ip"]
    assert "must be of type date-time" in errors[0].message


def test_unknown_fields_lists_what_pruning_would_drop() -> None:
    from apiserver.schema import unknown_fields

    o = obj({"image": "x", "bogus": 1, "ports": [{"port": 1, "junk": True}], "extra": {"k": 1}})
    assert unknown_fields(o, SCHEMA) == ["spec.bogus", "spec.ports[0].junk"]
