"""Where kopf keeps its handling state: nowhere on the objects.

By default kopf writes ``kopf.zalando.org/last-handled-configuration`` (the diff base)
and per-handler progress annotations on every object a changing handler (on.create,
on.update, on.resume, ...) handles: a PATCH and a MODIFIED event after each one, and
kopf's annotations on users' Services. The operators' only changing handler
(``allocate_stored_cluster_ip``) is idempotent and re-checks the object itself, so
nothing needs remembering:

- :class:`NoDiffBase`: no stored diff base, so kopf sees every event of an object that
  passes a handler's filters as a creation (never an update or a resume), and the
  handler runs again until its filter turns false. ``build`` is empty: there is nothing
  to diff against, and kopf would otherwise deep-copy every object of every watched
  kind (pods included) on every event.
- :class:`NoProgress`: no retry bookkeeping, so kopf does not retry a failed handler by
  itself; handlers that need retries get them from their next event or a periodic pass.

Objects that no handler's filters select are not touched either way (kopf stores no
state for them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kopf


class NoDiffBase(kopf.DiffBaseStorage):
    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return {}

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


class NoProgress(kopf.ProgressStorage):
    def fetch(self, *, key: Any, body: kopf.Body) -> kopf.ProgressRecord | None:
        return None

    def store(
        self, *, key: Any, record: kopf.ProgressRecord, body: kopf.Body, patch: kopf.Patch
    ) -> None:
        return None

    def purge(self, *, key: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        return None

    def touch(self, *, body: kopf.Body, patch: kopf.Patch, value: str | None) -> None:
        return None

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        return essence


def configure(settings: kopf.OperatorSettings) -> None:
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.progress_storage = NoProgress()
