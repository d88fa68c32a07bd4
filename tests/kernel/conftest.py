"""The kernel tier runs inside user-mode-linux (``make test-kernel``): elsewhere, skip it.

Inside the guest, tests/kernel/uml-run.sh sets ``UML_GUEST=1`` and loads the ip_vs,
dummy and veth modules; the host kernel of a CI runner usually has none of them.
"""

from __future__ import annotations

import os

import pytest

IN_GUEST = bool(os.environ.get("UML_GUEST"))
HAS_IPVS = os.path.exists("/proc/net/ip_vs")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    if IN_GUEST and HAS_IPVS:
        return
    reason = (
        "kernel tier: runs inside user-mode-linux (make test-kernel, or "
        "tests/kernel/uml-run.sh -- -q tests/kernel)"
        if not IN_GUEST
        else "kernel tier: this guest kernel has no IPVS (/proc/net/ip_vs missing)"
    )
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.skip(reason=reason))
