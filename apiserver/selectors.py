"""Label and field selectors, parsed and matched as apimachinery does (with its messages).

Label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a)``, ``k``, ``!k``
(and ``gt``/``lt`` on integers), joined by commas. Field selectors: ``f=v``, ``f==v``,
``f!=v``, joined by commas, with ``\\``-escapes. A bad selector raises ``SelectorError``
(answered as 400 BadRequest).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apiserver.validation import is_label_value, is_qualified_name


class SelectorError(ValueError):
    """The selector does not parse (or names a field the kind does not support)."""


# --------------------------------------------------------------------------- label selectors

_SPECIAL = "=!(),<>"
_BINARY_OPERATORS = ("in", "notin", "=", "==", "!=", "gt", "lt")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str
    """One of: exists, !, =, ==, !=, in, notin, gt, lt."""
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        op = self.operator
        if op == "exists":
            return present
        if op == "!":
            return not present
        if op in ("=", "==", "in"):
            return present and value in self.values
        if op in ("!=", "notin"):
            return not present or value not in self.values
        if op in ("gt", "lt"):
            if not present or value is None:
                return False
            try:
                number, bound = int(value), int(self.values[0])
            except ValueError:
                return False
            return number > bound if op == "gt" else number < bound
        return False

    def __str__(self) -> str:
        if self.operator == "exists":
            return self.key
        if self.operator == "!":
            return f"!{self.key}"
        if self.operator in ("in", "notin"):
            return f"{self.key} {self.operator} ({','.join(self.values)})"
        return f"{self.key}{self.operator}{self.values[0]}"


def _tokens(text: str) -> list[str]:
    """The lexer: identifiers, and the operators ``! != ( ) , = == > <``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in _SPECIAL:
            pair = text[i : i + 2]
            if pair in ("!=", "=="):
                out.append(pair)
                i += 2
            else:
                out.append(ch)
                i += 1
        else:
            start = i
            while i < len(text) and not text[i].isspace() and text[i] not in _SPECIAL:
                i += 1
            out.append(text[start:i])
    return out


def _is_identifier(token: str | None) -> bool:
    return token is not None and token not in ("!", "!=", "(", ")", ",", "=", "==", ">", "<")


class _LabelParser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        token = self.peek()
        self.pos += 1
        return token

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            token = self.peek()
            if token is None:
                return requirements
            if not (_is_identifier(token) or token == "!"):
                raise SelectorError(f"found '{token}', expected: !, identifier, or 'end of string'")
            try:
                requirements.append(self.requirement())
            except SelectorError as exc:
                raise SelectorError(f"unable to parse requirement: {exc}") from None
            after = self.take()
            if after is None:
                return requirements
            if after != ",":
                raise SelectorError(f"found '{after}', expected: ',' or 'end of string'")
            following = self.peek()
            if not (_is_identifier(following) or following == "!"):
                raise SelectorError(f"found '{following or ''}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        negated = False
        token = self.take()
        if token == "!":
            negated = True
            token = self.take()
        if not _is_identifier(token) or token is None:
            raise SelectorError(f"found '{token or ''}', expected: identifier")
        key = token
        _validate_key(key)
        if self.peek() in (None, ","):
            return Requirement(key, "!" if negated else "exists")
        if negated:
            raise SelectorError(f"found '{self.peek()}', expected: ',' or 'end of string'")
        operator = self.take() or ""
        if operator == ">":
            operator = "gt"
        elif operator == "<":
            operator = "lt"
        if operator not in _BINARY_OPERATORS:
            raise SelectorError(f"found '{operator}', expected: {', '.join(_BINARY_OPERATORS)}")
        if operator in ("in", "notin"):
            values = self.value_set()
            if not values:
                raise SelectorError("for 'in', 'notin' operators, values set can't be empty")
        else:
            values = self.exact_value()
        for value in values:
            _validate_value(value)
        if operator in ("gt", "lt"):
            try:
                int(values[0])
            except ValueError:
                raise SelectorError(
                    f"values[0]: Invalid value: \"{values[0]}\": for 'Gt', 'Lt' operators, "
                    "the value must be an integer"
                ) from None
        return Requirement(key, operator, values)

    def value_set(self) -> tuple[str, ...]:
        token = self.take()
        if token != "(":
            raise SelectorError(f"found '{token or ''}' expected: '('")
        if self.peek() == ")":
            self.take()
            return ("",)
        values: list[str] = []
        expect_value = True
        while True:
            token = self.take()
            if token == ")":
                if expect_value:
                    values.append("")
                return tuple(sorted(set(values)))
            if token == ",":
                if expect_value:
                    values.append("")
                expect_value = True
            elif _is_identifier(token) and token is not None and expect_value:
                values.append(token)
                expect_value = False
            else:
                raise SelectorError(f"found '{token or ''}', expected: ',', ')' or identifier")

    def exact_value(self) -> tuple[str, ...]:
        token = self.peek()
        if token in (None, ","):
            return ("",)
        self.take()
        if _is_identifier(token) and token is not None:
            return (token,)
        raise SelectorError(f"found '{token}', expected: identifier")


def _validate_key(key: str) -> None:
    errors = is_qualified_name(key)
    if errors:
        raise SelectorError(f'key: Invalid value: "{key}": {"; ".join(errors)}')


def _validate_value(value: str) -> None:
    errors = is_label_value(value)
    if errors:
        raise SelectorError(f'values[0]: Invalid value: "{value}": {"; ".join(errors)}')


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A parsed label selector; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if not text or not text.strip():
            return cls()
        return cls(tuple(_LabelParser(text).parse()))

    @classmethod
    def from_api(cls, selector: Mapping[str, Any] | None) -> LabelSelector:
        """From a metav1.LabelSelector (matchLabels + matchExpressions) as in object specs."""
        if not selector:
            return cls()
        requirements = [
            Requirement(k, "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()
        ]
        ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
        for expression in selector.get("matchExpressions") or []:
            operator = ops.get(str(expression.get("operator")))
            if operator is None:
                raise SelectorError(
                    f'"{expression.get("operator")}" is not a valid label selector operator'
                )
            values = tuple(str(v) for v in expression.get("values") or ())
            requirements.append(Requirement(str(expression.get("key")), operator, values))
        return cls(tuple(requirements))

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        found = labels or {}
        return all(r.matches(found) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def selector_from_map(labels: Mapping[str, str] | None) -> LabelSelector:
    """A ``spec.selector``-style map as a selector. An empty map gives the empty selector,
    which matches everything: a Service without a selector selects no pods, so callers
    check for that case themselves."""
    return LabelSelector(tuple(Requirement(k, "=", (v,)) for k, v in (labels or {}).items()))


# --------------------------------------------------------------------------- field selectors


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    operator: str
    """=, == or !=."""
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        actual = fields.get(self.field, "")
        return actual != self.value if self.operator == "!=" else actual == self.value


def _split_escaped(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _unescape(value: str, whole: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            if i + 1 >= len(value) or value[i + 1] not in "\\,=":
                raise SelectorError(f"invalid field selector: '{whole}'; invalid escape sequence")
            out.append(value[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _split_term(term: str) -> tuple[str, str, str] | None:
    i = 0
    while i < len(term):
        if term[i] == "\\":
            i += 2
            continue
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
        i += 1
    return None


@dataclass(frozen=True, slots=True)
class FieldSelector:
    """A parsed field selector; the empty selector matches everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        if not text or not text.strip():
            return cls()
        requirements = []
        for term in _split_escaped(text, ","):
            if not term:
                continue
            split = _split_term(term)
            if split is None:
                raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
            lhs, op, rhs = split
            requirements.append(FieldRequirement(lhs.strip(), op, _unescape(rhs, text)))
        return cls(tuple(requirements))

    @property
    def empty(self) -> bool:
        return not self.requirements

    def validate(self, supported: frozenset[str] | set[str]) -> None:
        """SelectorError ``field label not supported: spec.foo`` for a field the kind lacks."""
        for requirement in self.requirements:
            if requirement.field not in supported:
                raise SelectorError(f"field label not supported: {requirement.field}")

    def exact(self, field: str) -> str | None:
        """The value ``field`` must equal (``metadata.name=web`` -> ``web``), if required."""
        for requirement in self.requirements:
            if requirement.field == field and requirement.operator in ("=", "=="):
                return requirement.value
        return None

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(f"{r.field}{r.operator}{r.value}" for r in self.requirements)
