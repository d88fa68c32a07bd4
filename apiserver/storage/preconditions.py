"""The write preconditions every backend checks the same way (resourceVersion and uid)."""

from __future__ import annotations

from apiserver.storage import codec
from apiserver.storage.interface import Conflict, RawObject


def check_preconditions(
    key: str, current: RawObject, revision: int, expect_rv: str | None, expect_uid: str | None
) -> None:
    """Conflict unless ``current`` (at ``revision``) matches the expected rv and uid."""
    if expect_rv and expect_rv != str(revision):
        raise Conflict(
            key,
            f"the object has been modified (resourceVersion {revision}, expected {expect_rv});"
            " read it again and retry",
        )
    if expect_uid and expect_uid != codec.uid_of(current):
        raise Conflict(
            key,
            f"precondition failed: uid {expect_uid} does not match {codec.uid_of(current)}",
        )
