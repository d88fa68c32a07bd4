"""meta.k8s.io/v1 Tables for ``kubectl get``: the columns kubectl users know.

Each kind's columns are data (``Column``: a definition plus a function computing the cell);
the strategies declare them, ``build_table`` assembles the Table, and a CRD's
``additionalPrinterColumns`` become ``Column``s through ``printer_columns``. Every row carries
the object's metadata (PartialObjectMetadata) so that ``-A``, ``--show-labels`` and ``-L``
work; ``includeObject=Object`` (``--sort-by``) carries the whole object.
"""

from __future__ import annotations

import dis
import functools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from apiserver.resources import Resource

RawObject = dict[str, Any]
IncludeObject = Literal["Metadata", "Object", "None"]
CellFunction = Callable[[RawObject, datetime], Any]

TABLE_CONTENT_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"

NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although "
    "some resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
AGE_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was "
    "created. It is not guaranteed to be set in happens-before order across separate "
    "operations. Clients may not set this value. It is represented in RFC3339 form and is "
    "in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: ``17s``, ``5m3s``, ``3h``, ``2d4h``, ``3y``."""
    secs = int(seconds)
    if secs < -1:
        return "<invalid>"
    if secs < 0:
        return "0s"
    if secs < 60 * 2:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        rest = secs % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = secs // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


@functools.lru_cache(maxsize=65_536)
def _parse_time(value: str) -> datetime:
    # Memoised: every Table of a list parses each object's creationTimestamp again.
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def age(timestamp: Any, now: datetime) -> str:
    """kubectl's translateTimestampSince: ``<unknown>`` when there is no timestamp."""
    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        moment = _parse_time(timestamp)
    except ValueError:
        return "<unknown>"
    return human_duration((now - moment).total_seconds())


def format_labels(labels: Any) -> str:
    """labels.FormatLabels: ``k=v,k2=v2`` sorted by key, ``<none>`` when empty."""
    if not isinstance(labels, dict) or not labels:
        return "<none>"
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def list_with_more(items: list[str], more: bool, count: int, limit: int, empty: str) -> str:
    text = ",".join(items)
    if more:
        return f"{text} + {count - limit} more..."
    return text or empty


@dataclass(frozen=True, slots=True)
class Column:
    """One Table column: its definition and how to compute its cell from an object."""

    name: str
    value: CellFunction
    type: str = "string"
    format: str = ""
    description: str = ""
    priority: int = 0

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


def _name(obj: RawObject, _now: datetime) -> Any:
    return (obj.get("metadata") or {}).get("name", "")


def _age(obj: RawObject, now: datetime) -> Any:
    return age((obj.get("metadata") or {}).get("creationTimestamp"), now)


NAME_COLUMN = Column("Name", _name, format="name", description=NAME_DESCRIPTION)
AGE_COLUMN = Column("Age", _age, description=AGE_DESCRIPTION)
DEFAULT_COLUMNS: tuple[Column, ...] = (NAME_COLUMN, AGE_COLUMN)


ROW_MEMO_LIMIT = 100_000
"""Rows remembered per column set (then forgotten all at once)."""
_row_memos: dict[tuple[Column, ...], dict[tuple[str, str], list[Any]]] = {}
_reads_now: dict[CellFunction, bool] = {}


def reads_now(value: CellFunction) -> bool:
    """Whether a cell function reads its ``now`` argument (an age); if it does not, its
    cell is a function of the object alone. Cells take the time only from ``now``."""
    found = _reads_now.get(value)
    if found is None:
        code = getattr(value, "__code__", None)
        if code is None or code.co_argcount < 2:
            found = True
        else:
            now_name = code.co_varnames[1]
            found = any(
                ins.argval == now_name and ins.opname.startswith("LOAD_")
                for ins in dis.get_instructions(code)
            )
        if len(_reads_now) > 4096:  # cell functions made per CRD version
            _reads_now.clear()
        _reads_now[value] = found
    return found


def cells(columns: Sequence[Column], objs: Iterable[RawObject], now: datetime) -> list[list[Any]]:
    """The rows' cells. Cells that do not depend on the time are remembered per object
    version (uid and resourceVersion: a stored version never changes), so listing the same
    objects again computes only their ages."""
    cols = tuple(columns)
    timed = [reads_now(c.value) for c in cols]
    if all(timed):
        return [[column.value(obj, now) for column in cols] for obj in objs]
    memo = _row_memos.get(cols)
    if memo is None or len(memo) > ROW_MEMO_LIMIT:
        if len(_row_memos) > 256:
            _row_memos.clear()
        memo = _row_memos[cols] = {}
    dynamic = [(i, c) for i, (c, t) in enumerate(zip(cols, timed, strict=True)) if t]
    rows = []
    for obj in objs:
        meta = obj.get("metadata")
        version = None
        if isinstance(meta, dict):
            uid, rv = meta.get("uid"), meta.get("resourceVersion")
            if isinstance(uid, str) and isinstance(rv, str) and uid and rv:
                version = (uid, rv)
        if version is None:
            rows.append([column.value(obj, now) for column in cols])
            continue
        known = memo.get(version)
        if known is None:
            row = [column.value(obj, now) for column in cols]
            memo[version] = row.copy()
        else:
            row = known.copy()
            for i, column in dynamic:
                row[i] = column.value(obj, now)
        rows.append(row)
    return rows


def partial_object_metadata(obj: RawObject) -> RawObject:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def build_table(
    resource: Resource,
    objs: Sequence[RawObject],
    *,
    wide: bool = False,
    include_object: IncludeObject = "Metadata",
    columns: Sequence[Column] | None = None,
    now: datetime | None = None,
    resource_version: str | None = None,
    continue_token: str | None = None,
    with_definitions: bool = True,
) -> RawObject:
    """The meta.k8s.io/v1 Table for ``objs`` (a list, a single get, or one watch event).

    ``columns`` overrides the kind's own (a CRD's additionalPrinterColumns).
    ``with_definitions=False`` leaves columnDefinitions empty, as upstream does for every
    watch event after the first.
    """
    moment = now or datetime.now(UTC)
    if columns is not None:
        definitions = [c.definition() for c in columns]
        rows = cells(columns, objs, moment)
    else:
        from apiserver.strategy import strategy_for

        definitions, rows = strategy_for(resource).table(objs, wide=wide, now=moment)
    metadata: RawObject = {}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    if continue_token:
        metadata["continue"] = continue_token
    table_rows: list[RawObject] = []
    for obj, row_cells in zip(objs, rows, strict=True):
        row: RawObject = {"cells": row_cells}
        if include_object == "Metadata":
            row["object"] = partial_object_metadata(obj)
        elif include_object == "Object":
            row["object"] = obj
        table_rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions if with_definitions else [],
        "rows": table_rows,
    }


# --------------------------------------------------------------------------- CRD printer columns

_SEGMENT = re.compile(
    r"""\.([A-Za-z0-9_\-$]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*(['"])(.*?)\4\)\]"""
)


def json_path(obj: Any, path: str) -> Any:
    """The value at a simple JSONPath (``.spec.size``, ``.a[0].b``,
    ``.status.conditions[?(@.type=="Ready")].status``); None when absent.
    """
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if text.startswith("$"):
        text = text[1:]
    values: list[Any] = [obj]
    pos = 0
    while pos < len(text):
        match = _SEGMENT.match(text, pos)
        if match is None:
            return None
        pos = match.end()
        field, idx, filter_key, _quote, filter_value = match.groups()
        nxt: list[Any] = []
        for value in values:
            if field is not None and isinstance(value, dict) and field in value:
                nxt.append(value[field])
            elif idx is not None and isinstance(value, list) and int(idx) < len(value):
                nxt.append(value[int(idx)])
            elif filter_key is not None and isinstance(value, list):
                nxt.extend(
                    item for item in value if str(json_path(item, "." + filter_key)) == filter_value
                )
        values = nxt
        if not values:
            return None
    return values[0] if len(values) == 1 else values


def _printer_cell(path: str, kind: str) -> CellFunction:
    def value(obj: RawObject, now: datetime) -> Any:
        found = json_path(obj, path)
        if found is None:
            return None
        if kind == "date":
            return age(found, now)
        if isinstance(found, dict | list):
            return json.dumps(found, separators=(",", ":"))
        return found

    return value


def printer_columns(additional: Sequence[RawObject]) -> list[Column]:
    """Columns from a CRD version's ``additionalPrinterColumns`` (Name first, as upstream).

    ``type: date`` cells are rendered as ages; the others as the value found.
    """
    columns = [NAME_COLUMN]
    for spec in additional:
        kind = str(spec.get("type", "string"))
        columns.append(
            Column(
                str(spec.get("name", "")),
                _printer_cell(str(spec.get("jsonPath", "")), kind),
                type=kind,
                format=str(spec.get("format", "")),
                description=str(spec.get("description", "")),
                priority=int(spec.get("priority", 0) or 0),
            )
        )
    return columns
