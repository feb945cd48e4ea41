"""Bytes of a published calendar → its components as text, one by one.

The file is split at the text level before any parser sees it, so that one broken component
(a duplicated DTSTART, a date past 9999, a VTIMEZONE with two TZIDs, a truncated tail) costs
that component only. What producers really send is accepted: a UTF-8 byte-order mark, CRLF,
LF or CR line ends, Windows-1252 bytes, a gzip body although identity was asked, several
VCALENDARs in one file.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from functools import cached_property

from shared.errors import BadRequest

_LINE_END = re.compile(r"\r\n|\n|\r")
#: Properties whose values carry a TZID parameter that decides what instant they mean.
TIME_PROPERTIES = frozenset({"DTSTART", "DTEND", "DUE", "RECURRENCE-ID", "EXDATE", "RDATE"})
_TZID = re.compile(r';TZID=("[^"]*"|[^;]*)', re.IGNORECASE)
_NAME = re.compile(r"[^;:]*")


class IcsLimitExceeded(BadRequest):
    """The calendar is over one of the import's bounds; nothing of it is written."""


class NotACalendar(BadRequest):
    code = "ics_not_calendar"


def decode(body: bytes, *, max_bytes: int) -> str:
    """The calendar as text: gunzipped (bounded), byte-order mark dropped, UTF-8 or else Windows-1252."""
    if body[:2] == b"\x1f\x8b":
        # A server that compresses although ``Accept-Encoding: identity`` was sent, or a .ics.gz.
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            plain = inflater.decompress(body, max_bytes + 1)
        except zlib.error as exc:
            raise NotACalendar("the calendar is compressed and damaged", field="url") from exc
        if len(plain) > max_bytes or inflater.unconsumed_tail:
            raise IcsLimitExceeded(f"the calendar is larger than {max_bytes // (1024 * 1024)} MiB unpacked",
                                   field="url", code="ics_too_large")
        body = plain
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    elif body.startswith((b"\xff\xfe", b"\xfe\xff")):
        return body.decode("utf-16", errors="replace")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        # Outlook desktop and old Windows tools write the ANSI code page; cp1252 maps almost
        # every byte, and the few it does not (0x81, 0x8D, ...) become U+FFFD, not a failure.
        return body.decode("cp1252", errors="replace")


def check_is_calendar(text: str) -> None:
    head = text.lstrip()[:200].lower()
    if not head.startswith("begin:vcalendar"):
        # Outlook serves an HTML page instead of the calendar to non-browser clients.
        html = "<html" in head or "<!doctype" in head
        hint = " (an HTML page — is the link a published ICS link?)" if html else ""
        raise NotACalendar(f"the link does not return a calendar{hint}", field="url")


def unfold(text: str) -> list[str]:
    """Content lines with folding undone (RFC 5545 3.1); a fold may start with a space or a tab."""
    lines: list[str] = []
    for raw in _LINE_END.split(text):
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] += raw[1:]
        elif raw.strip():
            lines.append(raw)
    return lines


def split_line(line: str) -> tuple[str, str, str]:
    """(upper-case name, parameter part with its leading ';', value) of a content line.

    Time values never contain a colon, so for time properties the value starts after the *last*
    unquoted one: Exchange 2010 writes display-name TZIDs unquoted ("TZID=(UTC+01:00) Amsterdam, …").
    """
    lead = _NAME.match(line)
    last = lead is not None and lead.group(0).strip().upper() in TIME_PROPERTIES
    if '"' not in line:
        cut_at = line.rfind(":") if last else line.find(":")
    else:
        quoted = False
        cut_at = -1
        for index, char in enumerate(line):
            if char == '"':
                quoted = not quoted
            elif char == ":" and not quoted:
                cut_at = index
                if not last:
                    break
    if cut_at < 0:
        return line.strip().upper(), "", ""
    head, value = line[:cut_at], line[cut_at + 1:]
    cut = head.find(";")
    name = head if cut < 0 else head[:cut]
    return name.strip().upper(), "" if cut < 0 else head[cut:], value


def tzids_of(line: str) -> list[str]:
    _, params, _ = split_line(line)
    return [m.group(1).strip('"') for m in _TZID.finditer(params)]


def replace_tzid(line: str, mapping: dict[str, str]) -> str:
    """The line with each TZID parameter replaced through ``mapping`` (names not in it stay)."""
    name, params, value = split_line(line)
    if not params:
        return line
    fixed = _TZID.sub(lambda m: f";TZID={mapping.get(m.group(1).strip(chr(34)), m.group(1))}", params)
    return f"{line[:len(line) - len(params) - len(value) - 1]}{fixed}:{value}" if fixed != params else line


@dataclass
class Block:
    """One top-level component of a VCALENDAR, as its content lines (BEGIN and END included)."""

    name: str
    lines: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\r\n".join(self.lines) + "\r\n"

    @cached_property
    def names(self) -> list[str]:
        """Each line's property name, upper-case."""
        return [split_line(line)[0] for line in self.lines]

    @cached_property
    def _own(self) -> dict[str, list[str]]:
        depth = 0
        out: dict[str, list[str]] = {}
        for line, name in zip(self.lines[1:-1], self.names[1:-1], strict=True):
            if name == "BEGIN":
                depth += 1
            elif name == "END":
                depth -= 1
            elif depth == 0:
                out.setdefault(name, []).append(line)
        return out

    def own_properties(self, wanted: str) -> list[str]:
        """Lines of property ``wanted`` of this component itself (not of nested ones like VALARM)."""
        return self._own.get(wanted, [])


@dataclass
class Parsed:
    properties: list[tuple[str, str]]   # calendar-level (name, value), e.g. X-WR-TIMEZONE
    blocks: list[Block]
    broken: list[str]                   # names of components cut off or closed wrongly


def split(lines: list[str]) -> Parsed:
    """Top-level components of every VCALENDAR in the file; lines outside one are ignored."""
    properties: list[tuple[str, str]] = []
    blocks: list[Block] = []
    broken: list[str] = []
    in_calendar = False
    current: Block | None = None
    stack: list[str] = []
    for line in lines:
        name, _, value = split_line(line)
        marker = value.strip().upper() if name in ("BEGIN", "END") else ""
        if not in_calendar:
            in_calendar = name == "BEGIN" and marker == "VCALENDAR"
            continue
        if current is None:
            if name == "BEGIN":
                current, stack = Block(marker, [line]), [marker]
            elif name == "END" and marker == "VCALENDAR":
                in_calendar = False
            elif name != "END":
                properties.append((name, value))
            continue
        if name == "BEGIN":
            stack.append(marker)
            current.lines.append(line)
        elif name == "END" and marker in stack:
            while stack and stack[-1] != marker:
                stack.pop()  # an unclosed nested component (a VALARM without END) is dropped
            stack.pop()
            current.lines.append(f"END:{marker}")
            if not stack:
                blocks.append(current)
                current = None
        elif name == "END" and marker == "VCALENDAR":
            broken.append(current.name)
            current, in_calendar = None, False
        elif name != "END":
            current.lines.append(line)
    if current is not None:
        broken.append(current.name)  # the file ends inside a component (a truncated download)
    return Parsed(properties, blocks, broken)
