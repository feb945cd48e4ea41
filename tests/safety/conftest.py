"""Fixtures of the booking-safety tests: the connect package's in-memory world, sandbox and
browser stack (``tests/connect/conftest.py``)."""

from __future__ import annotations

from tests.connect.conftest import browser, page_factory, sandbox, stack, world

# Registered for this package too (pytest finds fixtures by name).
__all__ = ["browser", "page_factory", "sandbox", "stack", "world"]
