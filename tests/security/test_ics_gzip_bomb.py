"""Attack: a published calendar served gzip-compressed (accepted, because real servers compress
although identity was asked) that unpacks to far more than any calendar: 100 MiB from ~100 KiB.
Unpacking stops at the limit; the import fails with a clear reason and nothing is written."""

from __future__ import annotations

import gzip
import zlib
from datetime import UTC, datetime

import pytest

from shared.errors import BadRequest
from shared.ics.importer import parse_published

WINDOW = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2027, 11, 1, tzinfo=UTC))


def _bomb(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nX-PAD:"
    chunk = b"A" * (1024 * 1024)
    out = [packer.compress(head)]
    out.extend(packer.compress(chunk) for _ in range(size // len(chunk)))
    out.append(packer.compress(b"\r\nEND:VCALENDAR\r\n") + packer.flush())
    return b"".join(out)


@pytest.mark.timeout(60)
def test_a_gzip_bomb_stops_at_the_limit() -> None:
    body = _bomb(100 * 1024 * 1024)
    assert len(body) < 1024 * 1024
    with pytest.raises(BadRequest) as caught:
        parse_published(body, window_start=WINDOW[0], window_end=WINDOW[1])
    assert caught.value.code == "ics_too_large"


def test_a_small_gzip_calendar_is_read() -> None:
    body = gzip.compress(b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:a\r\nDTSTART:20261201T100000Z\r\n"
                         b"DTEND:20261201T110000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    assert [e.id for e in parse_published(body, window_start=WINDOW[0], window_end=WINDOW[1]).events] == ["a"]
