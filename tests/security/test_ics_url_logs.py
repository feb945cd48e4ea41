"""Attack surface: the URL of a published calendar is a credential (Outlook puts the secret in its
path). Whatever happens to an import — success, a server error, a gone calendar, an unreachable
host, a body that is no calendar — no log record, its arguments or its formatted traceback carries
the URL's secret part: not ours, and not the HTTP client's request lines, even with every logger
lowered to DEBUG and a handler added after the app configured its logging (as a host or a
debugging operator might)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from shared.ics import api
from shared.observability.redaction import configure_logging, logging_configured, unconfigure_logging
from shared.storage.memory import MemoryStorage
from tests.support.ics_world import Published, run_import, services

SECRET = "f7c0a1e25b8d4c3e9a6b1d2c3e4f5a6b"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged() -> Iterator[_Collect]:
    """Everything logged, through a handler added *after* the app configured logging, with every
    logger lowered to DEBUG."""
    # The running stack of other tests may have configured logging already; undo only our own.
    ours = not logging_configured()
    configure_logging()
    collect = _Collect()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", "httpx", "httpcore", "shared")}
    for name in levels:
        logging.getLogger(name or None).setLevel(logging.DEBUG)
    root.addHandler(collect)
    try:
        yield collect
    finally:
        root.removeHandler(collect)
        for name, level in levels.items():
            logging.getLogger(name or None).setLevel(level)
        if ours:
            unconfigure_logging()


def _everything(collect: _Collect) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) + repr(record.args) for record in collect.records)


@pytest.mark.parametrize(("status", "body"), [
    (200, None),                    # a normal import
    (500, b"server error"),         # transient: retried, with a traceback in the host's log
    (404, b"gone"),                 # the calendar was unpublished
    (200, b"<html>not a calendar</html>"),
])
async def test_the_calendar_url_never_reaches_a_log(published: str, logged: _Collect,
                                                     status: int, body: bytes | None) -> None:
    svc = services(MemoryStorage())
    # A shape no redaction rule knows (not Outlook's, no .ics, no ?token=): the secret is a path part.
    url = published.replace("/owa/calendar/x/calendar.ics", f"/export/{SECRET}/calendar")
    await api.set_ics_import(svc, "p", "r", {"url": url})
    Published.status = status
    if body is not None:
        Published.body = body
    try:
        await run_import(svc)
    except Exception:  # a transient failure is raised for the host to retry; logged below
        logging.getLogger("devtools.devhost").exception("Function sync_worker failed")
    assert Published.hits >= 1, "the import really fetched the calendar"
    assert logged.records, "the run was logged"
    assert SECRET not in _everything(logged)


async def test_an_unreachable_host_does_not_log_the_url(logged: _Collect) -> None:
    from devtools.azurite import free_port

    svc = services(MemoryStorage())
    await api.set_ics_import(svc, "p", "r",
                             {"url": f"http://127.0.0.1:{free_port()}/export/{SECRET}/calendar"})
    try:
        await run_import(svc)
    except Exception:  # as the host would log it
        logging.getLogger("devtools.devhost").exception("Function sync_worker failed")
    assert SECRET not in _everything(logged)
