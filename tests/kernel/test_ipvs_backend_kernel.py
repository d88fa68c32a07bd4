"""The IpvsBackend conformance suite on the real kernel (runs in user-mode-linux)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from proxy.ipvs import IpvsBackend
from tests.conformance.test_ipvs_backend import *  # noqa: F403 -- the same suite, here
from tests.conformance.test_ipvs_backend import make_kernel_backend


@pytest.fixture
def backend() -> Iterator[IpvsBackend]:
    """Only the kernel: the fake runs in tests/conformance."""
    yield from make_kernel_backend()
