"""Fixtures for guard tests."""

from __future__ import annotations

import pytest

from relaygraph.testing import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["sync", "async"])
def mode(request) -> str:
    return request.param
