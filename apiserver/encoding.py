"""JSON and YAML on the wire: one encoder for every response, one decoder for bodies."""

from __future__ import annotations

import json
from typing import Any

import yaml

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def encode(obj: Any) -> bytes:
    """Compact JSON bytes (UTF-8), as kube-apiserver writes them."""
    return _encoder.encode(obj).encode()


class DecodeError(ValueError):
    """The body is not the JSON or YAML its Content-Type says."""


def decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(str(exc)) from None


def decode_yaml(body: bytes) -> Any:
    try:
        return yaml.load(body, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise DecodeError(str(exc).replace("\n", " ")) from None


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings, as the API stores them."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def encode_yaml(obj: Any) -> bytes:
    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True).encode()
