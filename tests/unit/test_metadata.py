"""The uid and timestamps the registry gives new objects."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from apiserver import registry


def test_uids_are_canonical_random_version_4_uuids() -> None:
    uids = {registry.new_uid() for _ in range(1000)}
    assert len(uids) == 1000
    for uid in uids:
        parsed = uuid.UUID(uid)
        assert str(parsed) == uid
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_timestamps_are_rfc3339_utc_seconds_of_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    stamp = registry.now_rfc3339()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    assert before <= datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) <= after
