"""v1 Namespace: DNS-1123 label names, phase Active, the kubernetes.io/metadata.name label."""

from __future__ import annotations

from apiserver.strategies.access import dig, sub, text
from apiserver.strategy import GenericStrategy, RawObject
from apiserver.tables import AGE_COLUMN, NAME_COLUMN, Column
from apiserver.validation import Cause, index, invalid, is_dns1123_label, is_qualified_name
from minik8s.models import Namespace

NAME_LABEL = "kubernetes.io/metadata.name"


class NamespaceStrategy(GenericStrategy):
    model = Namespace
    name_validator = staticmethod(is_dns1123_label)
    extra_fields = ("status.phase",)

    def __init__(self) -> None:
        super().__init__(namespaced=False, has_status=True)

    def prepare_for_create(self, obj: RawObject) -> None:
        super().prepare_for_create(obj)
        obj["status"] = {"phase": "Active"}

    def default(self, obj: RawObject) -> None:
        meta = sub(obj, "metadata")
        if meta is not None and isinstance(meta.get("name"), str) and meta["name"]:
            labels = meta.get("labels")
            if labels is None:
                labels = meta["labels"] = {}
            if isinstance(labels, dict):
                labels[NAME_LABEL] = meta["name"]

    def validate_kind(self, obj: RawObject) -> list[Cause]:
        causes: list[Cause] = []
        for i, fin in enumerate(dig(obj, "spec", "finalizers") or []):
            if isinstance(fin, str):
                path = index("spec.finalizers", i)
                causes += [invalid(path, fin, m) for m in is_qualified_name(fin)]
        return causes

    def kind_fields(self, obj: RawObject) -> dict[str, str]:
        return {"status.phase": text(dig(obj, "status", "phase"))}

    columns = (
        NAME_COLUMN,
        Column(
            "Status",
            lambda obj, now: text(dig(obj, "status", "phase")),
            description="The status of the namespace",
        ),
        AGE_COLUMN,
    )
