"""Status errors: one translation from storage, kubectl's message shapes, list rules."""

from __future__ import annotations

import pytest

from apiserver import errors
from apiserver.errors import StatusCause, StatusError
from apiserver.registry import _Continue, _list_revision
from apiserver.storage.interface import AlreadyExists, Compacted, Conflict, NotFound


def test_storage_errors_never_leak_the_key() -> None:
    key = "/registry/services/default/web"
    for exc, code, reason in (
        (NotFound(key), 404, "NotFound"),
        (AlreadyExists(key), 409, "AlreadyExists"),
        (Conflict(key), 409, "Conflict"),
        (Compacted(key, 3, 9), 410, "Expired"),
    ):
        status = errors.from_storage(exc, "services", "web").to_status()
        assert (status["code"], status["reason"]) == (code, reason)
        assert "/registry" not in status["message"]
    assert errors.from_storage(NotFound(key), "services", "web").message == (
        'services "web" not found'
    )


def test_group_resources_are_qualified_in_messages() -> None:
    err = errors.not_found("endpointslices", "x", "discovery.k8s.io")
    assert err.message == 'endpointslices.discovery.k8s.io "x" not found'
    assert err.to_status()["details"] == {
        "name": "x",
        "group": "discovery.k8s.io",
        "kind": "endpointslices",
    }


def test_invalid_has_kubectls_shape() -> None:
    one = errors.invalid(
        "Service",
        "bad",
        [StatusCause("FieldValueInvalid", "Invalid value: 70000: x", "spec.ports[0].port")],
    )
    assert one.message == 'Service "bad" is invalid: spec.ports[0].port: Invalid value: 70000: x'
    status = one.to_status()
    assert status["code"] == 422 and status["details"]["causes"][0]["field"] == "spec.ports[0].port"
    two = errors.invalid(
        "Service",
        "bad",
        [
            StatusCause("FieldValueRequired", "Required value", "spec.a"),
            StatusCause("R", "m", "spec.b"),
        ],
    )
    assert two.message == 'Service "bad" is invalid: [spec.a: Required value, spec.b: m]'


def test_a_status_error_is_an_exception_with_its_message() -> None:
    err = errors.bad_request("no")
    assert isinstance(err, Exception) and str(err) == "no"
    assert isinstance(err, StatusError)


@pytest.mark.parametrize(
    ("rv", "match", "limit", "expected"),
    [
        ("", "", 0, 0),
        ("0", "", 500, 0),
        ("17", "", 0, 0),  # legacy: not older than 17 -> the latest
        ("17", "NotOlderThan", 0, 0),
        ("17", "Exact", 0, 17),
        ("17", "", 500, 17),  # with a limit, legacy semantics are exact
    ],
)
def test_list_resource_version_rules(rv: str, match: str, limit: int, expected: int) -> None:
    assert _list_revision(rv, match, limit, "") == expected


@pytest.mark.parametrize(
    ("rv", "match", "cont"),
    [("", "Exact", ""), ("5", "Sometimes", ""), ("5", "", "token"), ("x", "Exact", "")],
)
def test_bad_list_resource_version_combinations_are_400(rv: str, match: str, cont: str) -> None:
    with pytest.raises(StatusError) as caught:
        _list_revision(rv, match, 0, cont)
    assert caught.value.code == 400


def test_continue_tokens_round_trip_and_belong_to_their_list() -> None:
    token = _Continue("/registry/services/default/", 42, "opaque", 3)
    assert _Continue.decode(token.encode(), "/registry/services/default/") == token
    with pytest.raises(StatusError):
        _Continue.decode(token.encode(), "/registry/pods/default/")
    with pytest.raises(StatusError):
        _Continue.decode("not-a-token", "/registry/services/default/")
