"""Fixtures of the ICS tests; what they build is ``tests/support/ics_world.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.ics_world import serve_published


@pytest.fixture
def published() -> Iterator[str]:
    """The URL of a published Outlook calendar on loopback (``Published`` holds its state)."""
    with serve_published() as url:
        yield url
