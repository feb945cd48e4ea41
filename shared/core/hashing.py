"""Content hashes: a change is a change only if the content changed.

Items are normalised before hashing: volatile fields (ETags, change keys, modification stamps)
are dropped, times are moved to UTC and cut to whole seconds, containers get a canonical
order. An ETag bump on an Outlook event whose visible content stayed the same therefore gives
the same hash, and the planner writes nothing — the base of echo and loop prevention.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any

#: Keys that change without the content changing (Graph, OData, Table storage spellings).
VOLATILE_KEYS = frozenset({
    "etag", "@odata.etag", "odata.etag", "changeKey", "change_key", "lastModifiedDateTime",
    "last_modified", "lastModified", "createdDateTime", "created_at", "Timestamp", "updated_at",
})


def normalise(value: Any) -> Any:
    """A JSON-ready, canonical view of ``value`` with volatile fields dropped."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return normalise({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, Mapping):
        return {str(k): normalise(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
                if str(k) not in VOLATILE_KEYS}
    if isinstance(value, Enum):
        return normalise(value.value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            # Naive times would hash differently depending on where they were made: refuse them.
            raise ValueError("cannot hash a naive datetime")
        return value.astimezone(UTC).replace(microsecond=0).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((normalise(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, str):
        return value.strip()
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise TypeError(f"cannot hash a value of type {type(value).__name__}")


def content_hash(value: Any) -> str:
    """sha256 hex of the normalised value; equal content gives an equal hash."""
    canonical = json.dumps(normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
