"""Functions release what they open: a Functions worker lives for hours, so an HTTP client or
token session left open per invocation adds up to exhausted sockets and memory."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator

import pytest

from devtools.stack import Stack
from tests.support.e2e import ANNA, Names, berlin, wait_slots


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def asyncio_errors() -> Iterator[list[str]]:
    handler = _Collect()
    logger = logging.getLogger("asyncio")
    gc.collect()  # what earlier tests left behind is not this test's business
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def test_sync_and_booking_runs_leave_no_http_session_open(stack: Stack, names: Names,
                                                          asyncio_errors: list[str]) -> None:
    linked = stack.link_app_only(ANNA, names.calendar, names.provider, names.resource)
    began = time.monotonic()
    stack.graph.create_event(ANNA, "Sitzung", berlin(28, 9), berlin(28, 10), calendar_id=linked.calendar_id)
    wait_slots(stack, names, lambda s: len(s) == 1, what="slot", started=began)
    booking = stack.timum.make_booking(names.provider, names.resource, berlin(28, 14), service_name="Schließen")
    stack.wait_for(lambda: any(booking.id in str(e.ext_props) for e in stack.graph.calendar_events(linked.calendar_id)),
                   what="booking event")
    gc.collect()  # sessions nobody closed are reported ("Unclosed client session") when collected
    leaked = [m for m in asyncio_errors if m.startswith(("Unclosed client session", "Unclosed connector"))]
    assert leaked == []
