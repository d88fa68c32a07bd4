"""Field validation as upstream does it: causes with Kubernetes field paths and messages.

The messages are apimachinery's own (``IsDNS1123Label``, ``IsQualifiedName``...), so that
kubectl prints what Kubernetes users know::

    The Service "myService" is invalid: metadata.name: Invalid value: "myService": a DNS-1035
    label must consist of lower case alphanumeric characters or '-', ...

Every check returns a list of ``Cause``; nothing here raises.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------- causes


@dataclass(frozen=True, slots=True)
class Cause:
    """One field error, as in a Status' ``details.causes``."""

    reason: str
    """FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, ..."""
    message: str
    """``Invalid value: 70000: must be between 1 and 65535, inclusive``"""
    field: str
    """``spec.ports[0].port``"""

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


def show(value: Any) -> str:
    """A bad value as Go's field.Error prints it: strings quoted, numbers and bools plain."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[]string{" + ", ".join(json.dumps(v) for v in value) + "}"
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def invalid(field: str, value: Any, detail: str) -> Cause:
    return Cause("FieldValueInvalid", f"Invalid value: {show(value)}: {detail}", field)


def required(field: str, detail: str = "") -> Cause:
    return Cause("FieldValueRequired", "Required value" + (f": {detail}" if detail else ""), field)


def not_supported(field: str, value: Any, supported: Iterable[str]) -> Cause:
    values = ", ".join(json.dumps(v) for v in sorted(supported))
    return Cause(
        "FieldValueNotSupported",
        f"Unsupported value: {show(value)}: supported values: {values}",
        field,
    )


def duplicate(field: str, value: Any, shown: str | None = None) -> Cause:
    return Cause("FieldValueDuplicate", f"Duplicate value: {shown or show(value)}", field)


def forbidden(field: str, detail: str) -> Cause:
    return Cause("FieldValueForbidden", f"Forbidden: {detail}", field)


def not_found(field: str, value: Any) -> Cause:
    return Cause("FieldValueNotFound", f"Not found: {show(value)}", field)


def too_long(field: str, limit: int) -> Cause:
    return Cause("FieldValueTooLong", f"Too long: must have at most {limit} bytes", field)


def too_many(field: str, actual: int, limit: int) -> Cause:
    return Cause("FieldValueTooMany", f"Too many: {actual}: must have at most {limit} items", field)


def type_invalid(field: str, value: Any, detail: str) -> Cause:
    return Cause("FieldValueTypeInvalid", f"Invalid value: {show(value)}: {detail}", field)


def child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def key(path: str, k: str) -> str:
    return f"{path}[{k}]"


# --------------------------------------------------------------------------- string formats


def _regex_error(message: str, fmt: str, *examples: str) -> str:
    shown = " or ".join(f"'{e}', " for e in examples)
    if examples:
        return f"{message} (e.g. {shown}regex used for validation is '{fmt}')"
    return f"{message} (regex used for validation is '{fmt}')"


def max_len_error(limit: int) -> str:
    return f"must be no more than {limit} characters"


EMPTY_ERROR = "must be non-empty"

DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_FMT = rf"{DNS1123_LABEL_FMT}(\.{DNS1123_LABEL_FMT})*"
DNS1123_SUBDOMAIN_MAX = 253
DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_FMT = f"({QUALIFIED_NAME_FMT})?"
LABEL_VALUE_MAX = 63
ENV_VAR_NAME_FMT = "[-._a-zA-Z][-._a-zA-Z0-9]*"
CONFIG_KEY_FMT = "[-._a-zA-Z0-9]+"
TOTAL_ANNOTATION_SIZE = 256 * 1024

_DNS1123_LABEL = re.compile(f"^{DNS1123_LABEL_FMT}$")
_DNS1123_SUBDOMAIN = re.compile(f"^{DNS1123_SUBDOMAIN_FMT}$")
_DNS1035_LABEL = re.compile(f"^{DNS1035_LABEL_FMT}$")
_QUALIFIED_NAME = re.compile(f"^{QUALIFIED_NAME_FMT}$")
_LABEL_VALUE = re.compile(f"^{LABEL_VALUE_FMT}$")
_ENV_VAR_NAME = re.compile(f"^{ENV_VAR_NAME_FMT}$")
_CONFIG_KEY = re.compile(f"^{CONFIG_KEY_FMT}$")
_PORT_NAME_CHARSET = re.compile("^[-a-z0-9]+$")
_PORT_NAME_ONE_LETTER = re.compile("[a-z]")

_DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
    "start with an alphabetic character, and end with an alphanumeric character"
)
_QUALIFIED_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, "
    "'-', '_' or '.', and must start and end with an alphanumeric character"
)


# Each check below returns at once for a valid value (most are) and only then works out
# which of upstream's messages apply.


def is_dns1123_label(value: str) -> list[str]:
    if len(value) <= DNS1123_LABEL_MAX and _DNS1123_LABEL.match(value):
        return []
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _DNS1123_LABEL.match(value):
        errs.append(_regex_error(_DNS1123_LABEL_MSG, DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    if len(value) <= DNS1123_SUBDOMAIN_MAX and _DNS1123_SUBDOMAIN.match(value):
        return []
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _DNS1123_SUBDOMAIN.match(value):
        errs.append(_regex_error(_DNS1123_SUBDOMAIN_MSG, DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    if len(value) <= DNS1123_LABEL_MAX and _DNS1035_LABEL.match(value):
        return []
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _DNS1035_LABEL.match(value):
        errs.append(_regex_error(_DNS1035_LABEL_MSG, DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def is_qualified_name(value: str) -> list[str]:
    if len(value) <= QUALIFIED_NAME_MAX and "/" not in value and _QUALIFIED_NAME.match(value):
        return []
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part " + EMPTY_ERROR)
        else:
            errs.extend("prefix part " + msg for msg in is_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name "
            + _regex_error(_QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part " + EMPTY_ERROR)
    elif len(name) > QUALIFIED_NAME_MAX:
        errs.append("name part " + max_len_error(QUALIFIED_NAME_MAX))
    if not _QUALIFIED_NAME.match(name):
        errs.append(
            "name part "
            + _regex_error(_QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def is_label_value(value: str) -> list[str]:
    if len(value) <= LABEL_VALUE_MAX and _LABEL_VALUE.match(value):
        return []
    errs = []
    if len(value) > LABEL_VALUE_MAX:
        errs.append(max_len_error(LABEL_VALUE_MAX))
    if not _LABEL_VALUE.match(value):
        errs.append(_regex_error(_LABEL_VALUE_MSG, LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def is_valid_port_num(port: int) -> list[str]:
    return [] if 1 <= port <= 65535 else ["must be between 1 and 65535, inclusive"]


def is_valid_port_name(port: str) -> list[str]:
    """IANA_SVC_NAME (container port names, named targetPorts)."""
    errs = []
    if len(port) > 15:
        errs.append(max_len_error(15))
    if not _PORT_NAME_CHARSET.match(port):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _PORT_NAME_ONE_LETTER.search(port):
        errs.append("must contain at least one letter (a-z)")
    if "--" in port:
        errs.append("must not contain consecutive hyphens")
    if port and (port[0] == "-" or port[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def is_env_var_name(value: str) -> list[str]:
    if _ENV_VAR_NAME.match(value):
        return []
    return [
        _regex_error(
            "a valid environment variable name must consist of alphabetic characters, "
            "digits, '_', '-', or '.', and must not start with a digit",
            ENV_VAR_NAME_FMT,
            "my.env-name",
            "MY_ENV.NAME",
            "MyEnvName1",
        )
    ]


def is_config_map_key(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _CONFIG_KEY.match(value):
        errs.append(
            _regex_error(
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                CONFIG_KEY_FMT,
                "key.name",
                "KEY_NAME",
                "key-name",
            )
        )
    if value == ".":
        errs.append("must not be '.'")
    elif value == "..":
        errs.append("must not be '..'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


IP_MSG = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
CIDR_MSG = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def validate_ip(field: str, value: str) -> list[Cause]:
    return [] if parse_ip(value) is not None else [invalid(field, value, IP_MSG)]


def validate_cidr(field: str, value: str) -> list[Cause]:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return [invalid(field, value, CIDR_MSG)]
    return []


def one_of(field: str, value: Any, supported: Sequence[str]) -> list[Cause]:
    return [] if value in supported else [not_supported(field, value, supported)]


# --------------------------------------------------------------------------- object metadata

NameValidator = Callable[[str], list[str]]


def mask_trailing_dash(name: str) -> str:
    """generateName prefixes may end in '-' (a suffix follows); validate them as if not."""
    return name[:-1] + "a" if len(name) > 1 and name.endswith("-") else name


def validate_labels(labels: Mapping[str, Any], field: str) -> list[Cause]:
    causes: list[Cause] = []
    for k, v in labels.items():
        problems = is_qualified_name(k)
        if problems:
            causes.extend(invalid(field, k, msg) for msg in problems)
        if isinstance(v, str):
            problems = is_label_value(v)
            if problems:
                causes.extend(invalid(field, v, msg) for msg in problems)
    return causes


def validate_annotations(annotations: Mapping[str, Any], field: str) -> list[Cause]:
    causes: list[Cause] = []
    total = 0
    for k, v in annotations.items():
        causes.extend(invalid(field, k, msg) for msg in is_qualified_name(k.lower()))
        total += len(k.encode()) + (len(v.encode()) if isinstance(v, str) else 0)
    if total > TOTAL_ANNOTATION_SIZE:
        causes.append(too_long(field, TOTAL_ANNOTATION_SIZE))
    return causes


def validate_finalizers(finalizers: list[Any], field: str) -> list[Cause]:
    causes: list[Cause] = []
    seen: set[str] = set()
    for i, fin in enumerate(finalizers):
        if not isinstance(fin, str):
            continue
        causes.extend(invalid(field, fin, msg) for msg in is_qualified_name(fin))
        if fin in seen:
            causes.append(duplicate(index(field, i), fin))
        seen.add(fin)
    return causes


def validate_owner_references(refs: list[Any], field: str) -> list[Cause]:
    causes: list[Cause] = []
    controllers = []
    for ref in refs:
        if not isinstance(ref, dict):
            continue
        api_version = ref.get("apiVersion") or ""
        if not api_version:
            causes.append(
                invalid(child(field, "apiVersion"), api_version, "version must not be empty")
            )
        if not ref.get("kind"):
            causes.append(
                invalid(child(field, "kind"), ref.get("kind", ""), "kind must not be empty")
            )
        if not ref.get("name"):
            causes.append(
                invalid(child(field, "name"), ref.get("name", ""), "name must not be empty")
            )
        if not ref.get("uid"):
            causes.append(invalid(child(field, "uid"), ref.get("uid", ""), "uid must not be empty"))
        if ref.get("controller") is True:
            controllers.append(f"{ref.get('kind')}/{ref.get('name')}")
    if len(controllers) > 1:
        causes.append(
            invalid(
                field,
                refs,
                'Only one reference can have Controller set to true. Found "true" in '
                f"references for {' and '.join(controllers)}",
            )
        )
    return causes


def validate_object_meta(
    meta: Mapping[str, Any],
    *,
    namespaced: bool,
    name_validator: NameValidator = is_dns1123_subdomain,
    field: str = "metadata",
) -> list[Cause]:
    """ValidateObjectMeta: name/generateName, namespace, labels, annotations, finalizers, owners."""
    causes: list[Cause] = []
    name = meta.get("name") or ""
    generate_name = meta.get("generateName") or ""
    if generate_name and isinstance(generate_name, str):
        causes.extend(
            invalid(child(field, "generateName"), generate_name, msg)
            for msg in name_validator(mask_trailing_dash(generate_name))
        )
    if not name:
        if not generate_name:
            causes.append(required(child(field, "name"), "name or generateName is required"))
    elif isinstance(name, str):
        problems = name_validator(name)
        if problems:
            causes.extend(invalid(child(field, "name"), name, msg) for msg in problems)
    namespace = meta.get("namespace") or ""
    if namespaced:
        if not namespace:
            causes.append(required(child(field, "namespace")))
        elif isinstance(namespace, str):
            problems = is_dns1123_label(namespace)
            if problems:
                causes.extend(invalid(child(field, "namespace"), namespace, m) for m in problems)
    elif namespace:
        causes.append(forbidden(child(field, "namespace"), "not allowed on this type"))
    labels = meta.get("labels")
    if isinstance(labels, dict):
        causes.extend(validate_labels(labels, child(field, "labels")))
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        causes.extend(validate_annotations(annotations, child(field, "annotations")))
    finalizers = meta.get("finalizers")
    if isinstance(finalizers, list):
        causes.extend(validate_finalizers(finalizers, child(field, "finalizers")))
    owners = meta.get("ownerReferences")
    if isinstance(owners, list):
        causes.extend(validate_owner_references(owners, child(field, "ownerReferences")))
    generation = meta.get("generation")
    if isinstance(generation, int) and generation < 0:
        causes.append(
            invalid(child(field, "generation"), generation, "must be greater than or equal to 0")
        )
    return causes


IMMUTABLE = "field is immutable"


def validate_object_meta_update(
    new: Mapping[str, Any], old: Mapping[str, Any], field: str = "metadata"
) -> list[Cause]:
    """ValidateObjectMetaUpdate: name, namespace, uid and creationTimestamp never change, and
    no finalizer may be added once the object is being deleted."""
    causes: list[Cause] = []
    for name in ("name", "namespace", "uid", "creationTimestamp"):
        if (new.get(name) or "") != (old.get(name) or "") and old.get(name):
            causes.append(invalid(child(field, name), new.get(name) or "", IMMUTABLE))
    if old.get("deletionTimestamp"):
        before = set(old.get("finalizers") or [])
        added = sorted(
            f for f in new.get("finalizers") or [] if isinstance(f, str) and f not in before
        )
        if added:
            causes.append(
                forbidden(
                    child(field, "finalizers"),
                    "no new finalizers can be added if the object is being deleted, "
                    f"found new finalizers {show(added)}",
                )
            )
    return causes
