"""Metadata and format validation give upstream's causes and messages."""

from __future__ import annotations

import pytest

from apiserver.validation import (
    Cause,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_value,
    is_qualified_name,
    is_valid_port_name,
    validate_object_meta,
    validate_object_meta_update,
)

DNS1035_MESSAGE = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


def test_dns1035_message_is_upstreams_word_for_word() -> None:
    assert is_dns1035_label("myService") == [DNS1035_MESSAGE]
    assert is_dns1035_label("my-service") == []
    assert is_dns1035_label("1abc") == [DNS1035_MESSAGE]


def test_dns1123_label_length_and_format() -> None:
    assert is_dns1123_label("a" * 63) == []
    errors = is_dns1123_label("a" * 64)
    assert errors == ["must be no more than 63 characters"]


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("app", True),
        ("example.com/app", True),
        ("app.kubernetes.io/name", True),
        ("a/b/c", False),
        ("/app", False),
        ("-app", False),
        ("Example.com/app", False),
    ],
)
def test_qualified_names(value: str, valid: bool) -> None:
    assert (is_qualified_name(value) == []) is valid


def test_lengths_at_and_past_the_limits() -> None:
    assert is_dns1035_label("a" * 63) == []
    assert is_dns1035_label("a" * 64) == ["must be no more than 63 characters"]
    assert is_dns1123_subdomain("a" * 253) == []
    assert is_dns1123_subdomain("a" * 254) == ["must be no more than 253 characters"]
    assert is_qualified_name("a" * 63) == []
    assert is_qualified_name("a" * 64) == ["name part must be no more than 63 characters"]
    assert is_qualified_name("example.com/" + "a" * 63) == []
    assert is_label_value("a" * 63) == []
    assert is_label_value("") == []
    assert is_label_value("a" * 64) == ["must be no more than 63 characters"]


@pytest.mark.parametrize(
    ("name", "errors"),
    [
        ("http", []),
        ("http-alt", []),
        ("8080", ["must contain at least one letter (a-z)"]),
        ("a--b", ["must not contain consecutive hyphens"]),
        ("Http", ["must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"]),
        ("averyveryverylongname", ["must be no more than 15 characters"]),
    ],
)
def test_port_names_are_iana_service_names(name: str, errors: list[str]) -> None:
    assert is_valid_port_name(name) == errors


def test_name_or_generate_name_is_required() -> None:
    causes = validate_object_meta({"namespace": "default"}, namespaced=True)
    assert causes == [
        Cause(
            "FieldValueRequired",
            "Required value: name or generateName is required",
            "metadata.name",
        )
    ]
    assert validate_object_meta({"generateName": "web-", "namespace": "d"}, namespaced=True) == []


def test_namespace_rules_follow_scope() -> None:
    missing = validate_object_meta({"name": "a"}, namespaced=True)
    assert [str(c) for c in missing] == ["metadata.namespace: Required value"]
    forbidden = validate_object_meta({"name": "a", "namespace": "x"}, namespaced=False)
    assert [str(c) for c in forbidden] == [
        "metadata.namespace: Forbidden: not allowed on this type"
    ]


def test_bad_labels_and_huge_annotations_are_reported() -> None:
    meta = {
        "name": "a",
        "namespace": "d",
        "labels": {"app": "not valid!"},
        "annotations": {"big": "x" * (256 * 1024)},
    }
    causes = validate_object_meta(meta, namespaced=True)
    assert [c.field for c in causes] == ["metadata.labels", "metadata.annotations"]
    assert causes[0].message.startswith('Invalid value: "not valid!": a valid label must be')
    assert causes[1] == Cause(
        "FieldValueTooLong", "Too long: must have at most 262144 bytes", "metadata.annotations"
    )


def test_duplicate_finalizers_and_incomplete_owner_references() -> None:
    meta = {
        "name": "a",
        "namespace": "d",
        "finalizers": ["example.com/x", "example.com/x"],
        "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p"}],
    }
    causes = validate_object_meta(meta, namespaced=True)
    assert [str(c) for c in causes] == [
        'metadata.finalizers[1]: Duplicate value: "example.com/x"',
        'metadata.ownerReferences.uid: Invalid value: "": uid must not be empty',
    ]


def test_name_and_uid_are_immutable() -> None:
    causes = validate_object_meta_update({"name": "b", "uid": "1"}, {"name": "a", "uid": "1"})
    assert [str(c) for c in causes] == ['metadata.name: Invalid value: "b": field is immutable']


def test_no_new_finalizers_once_deleting() -> None:
    old = {"name": "a", "deletionTimestamp": "2024-01-01T00:00:00Z", "finalizers": ["x.io/a"]}
    new = {**old, "finalizers": ["x.io/a", "x.io/b"]}
    assert [str(c) for c in validate_object_meta_update(new, old)] == [
        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being "
        'deleted, found new finalizers []string{"x.io/b"}'
    ]
    assert validate_object_meta_update({**old, "finalizers": []}, old) == []
