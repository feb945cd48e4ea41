"""Independent calendar readers, each reduced to what a subscriber sees: the calendar's name and
per event (uid, summary, UTC start, UTC end, sequence). ``None`` where a reader does not expose a
field. Each raises ``AssertionError`` when the reader refuses the feed or drops an event.

* Mozilla's ical.js (Thunderbird's parser) — ``devtools/icaljs/parse.cjs``
* node-ical (Node calendar apps, MagicMirror) — ``tests/ics/readers/node_ical.cjs``
* vobject (Python; Radicale, older khal)
* calcurse (a C terminal calendar with a strict importer that skips what it cannot read)

Installed by the project's own files: package.json (ical.js, node-ical), requirements-dev.txt
(vobject), the Makefile's apt step (calcurse).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Seen:
    uid: str | None
    summary: str
    start: datetime
    end: datetime
    sequence: int | None


@dataclass(frozen=True)
class Reading:
    name: str | None
    events: list[Seen]


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _node(script: Path, body: bytes) -> dict[str, object]:
    proc = subprocess.run(["node", str(script)], input=body, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def _from_json(doc: dict[str, object]) -> Reading:
    events = doc["events"]
    assert isinstance(events, list)
    seen = [Seen(e.get("uid"), str(e.get("summary") or ""), _iso(e["start"]), _iso(e["end"]),
                 None if e.get("sequence") is None else int(e["sequence"])) for e in events]
    name = doc.get("name")
    return Reading(None if name is None else str(name), seen)


def read_ical_js(body: bytes) -> Reading:
    return _from_json(_node(ROOT / "devtools/icaljs/parse.cjs", body))


def read_node_ical(body: bytes) -> Reading:
    return _from_json(_node(ROOT / "tests/ics/readers/node_ical.cjs", body))


def read_vobject(body: bytes) -> Reading:
    import vobject

    cal = vobject.readOne(body.decode("utf-8"))
    events = []
    for ev in getattr(cal, "vevent_list", []):
        events.append(Seen(str(ev.uid.value), str(ev.summary.value), ev.dtstart.value.astimezone(UTC),
                           ev.dtend.value.astimezone(UTC), int(ev.sequence.value)))
    names = cal.contents.get("x-wr-calname")
    return Reading(str(names[0].value) if names else None, events)


_CALCURSE_APT = re.compile(r"^(\d{8}T\d{6}) (\d{8}T\d{6}) (.*)$")


def read_calcurse(body: bytes, *, start: datetime, days: int) -> Reading:
    """Import into an empty calcurse directory (strict: the import must skip nothing), then list."""
    exe = shutil.which("calcurse")
    assert exe is not None, "calcurse is not installed (make setup installs it)"
    env = {**os.environ, "TZ": "UTC", "HOME": tempfile.gettempdir()}
    with tempfile.TemporaryDirectory() as home:
        path = Path(home) / "feed.ics"
        path.write_bytes(body)
        data = Path(home) / "data"
        data.mkdir()
        imported = subprocess.run([exe, "-D", str(data), "-q", "-i", str(path)], capture_output=True, timeout=60,
                                  check=False, env=env, cwd=home)
        report = imported.stdout.decode(errors="replace") + imported.stderr.decode(errors="replace")
        assert imported.returncode == 0 and "could not be imported" not in report, report
        listed = subprocess.run([exe, "-D", str(data), "--input-datefmt", "4", "-Q", "--from",
                                 start.strftime("%Y-%m-%d"), "--days", str(days), "--format-apt",
                                 "%(start:%Y%m%dT%H%M%S) %(end:%Y%m%dT%H%M%S) %m\\n"],
                                capture_output=True, timeout=60, check=False, env=env, cwd=home)
        assert listed.returncode == 0, listed.stderr.decode(errors="replace")
    events = []
    for line in listed.stdout.decode().splitlines():
        match = _CALCURSE_APT.match(line)
        if match:
            begin, end, summary = match.groups()
            events.append(Seen(None, summary, datetime.strptime(begin, "%Y%m%dT%H%M%S").replace(tzinfo=UTC),
                               datetime.strptime(end, "%Y%m%dT%H%M%S").replace(tzinfo=UTC), None))
    return Reading(None, events)


READERS: dict[str, Callable[[bytes], Reading]] = {
    "ical.js": read_ical_js,
    "node-ical": read_node_ical,
    "vobject": read_vobject,
}
