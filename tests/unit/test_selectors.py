"""Label and field selectors parse and match as apimachinery's do."""

from __future__ import annotations

import pytest

from apiserver.selectors import FieldSelector, LabelSelector, SelectorError

WEB = {"app": "web", "tier": "frontend", "replicas": "3"}
DB = {"app": "db"}


@pytest.mark.parametrize(
    ("selector", "web", "db"),
    [
        ("", True, True),
        ("app=web", True, False),
        ("app==web", True, False),
        ("app!=web", False, True),
        ("tier!=backend", True, True),
        ("app in (web,db)", True, True),
        ("app in (web,db),app!=db", True, False),
        ("app notin (web)", False, True),
        ("tier", True, False),
        ("!tier", False, True),
        ("app=web,tier=frontend", True, False),
        ("  app = web ", True, False),
        ("replicas>2", True, False),
        ("replicas<2", False, False),
        ("missing notin (x)", True, True),
    ],
)
def test_label_selectors_match(selector: str, web: bool, db: bool) -> None:
    parsed = LabelSelector.parse(selector)
    assert (parsed.matches(WEB), parsed.matches(DB)) == (web, db)


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("app in web", "unable to parse requirement: found 'web' expected: '('"),
        ("app=web,", "found '', expected: identifier after ','"),
        ("app=web tier", "found 'tier', expected: ',' or 'end of string'"),
        ("=web", "found '=', expected: !, identifier, or 'end of string'"),
    ],
)
def test_bad_label_selectors_say_what_was_expected(selector: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        LabelSelector.parse(selector)
    assert str(info.value) == message


def test_invalid_label_key_is_rejected() -> None:
    with pytest.raises(SelectorError, match="key: Invalid value"):
        LabelSelector.parse("a/b/c=x")


def test_api_label_selector_with_expressions() -> None:
    selector = LabelSelector.from_api(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend"]}],
        }
    )
    assert selector.matches(WEB)
    assert not selector.matches(DB)


def test_field_selectors_match_and_name_exact_values() -> None:
    selector = FieldSelector.parse("metadata.name=web-1,status.phase!=Failed")
    fields = {"metadata.name": "web-1", "status.phase": "Running"}
    assert selector.matches(fields)
    assert not selector.matches({**fields, "status.phase": "Failed"})
    assert selector.exact("metadata.name") == "web-1"
    assert selector.exact("status.phase") is None
    assert FieldSelector.parse("").matches({})
    assert FieldSelector.parse("metadata.name==a").exact("metadata.name") == "a"


def test_field_selector_escapes() -> None:
    selector = FieldSelector.parse(r"metadata.name=a\,b")
    assert selector.requirements[0].value == "a,b"


def test_unsupported_and_malformed_field_selectors() -> None:
    with pytest.raises(SelectorError) as info:
        FieldSelector.parse("spec.foo=bar").validate(frozenset({"metadata.name"}))
    assert str(info.value) == "field label not supported: spec.foo"
    with pytest.raises(SelectorError, match="can't understand 'nonsense'"):
        FieldSelector.parse("nonsense")
