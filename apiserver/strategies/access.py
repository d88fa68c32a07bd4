"""Type-safe reads from raw (possibly ill-typed) wire dicts, for validation and printing."""

from __future__ import annotations

from typing import Any


def dig(obj: Any, *path: str | int) -> Any:
    """``obj[path[0]][path[1]]...``; None when any step is missing or of the wrong type."""
    value = obj
    try:
        for step in path:
            if isinstance(value, str):
                return None
            value = value[step]
    except (KeyError, IndexError, TypeError):
        return None
    return value


def dicts(value: Any) -> list[tuple[int, dict[str, Any]]]:
    """The (index, item) pairs of a list's dict items; [] for anything but a list."""
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def sub(obj: dict[str, Any], name: str) -> dict[str, Any] | None:
    """``obj[name]`` when it is a dict; None otherwise (never creates it)."""
    value = obj.get(name)
    return value if isinstance(value, dict) else None
