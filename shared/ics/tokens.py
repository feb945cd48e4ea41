"""Secret feed tokens, one per resource. Only the token's SHA-256 is stored.

``icsfeeds``      PK sha256(token) → provider, resource, calendar name (the feed's look-up)
``icsfeedowners`` PK provider|resource → current token hash (for rotation and revocation)

A look-up is by hash, so no stored secret is ever compared with user input; unknown and
revoked tokens are indistinguishable (both: no row).

``TokenLookups`` keeps successful look-ups for ``LOOKUP_TTL`` seconds per process, so a feed
request does not read this table each time. A revoked or rotated token therefore keeps working
on *other* instances for at most ``LOOKUP_TTL``; in this process, ``issue``/``revoke`` void every
cached look-up at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from shared.domain import LinkKey
from shared.storage.base import StoragePort, encode_key

FEEDS = "icsfeeds"
OWNERS = "icsfeedowners"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43,64}$")
LOOKUP_TTL = 10.0  # seconds; the longest a token revoked elsewhere keeps working here

# Raised by every issue/revoke in this process; a cached look-up taken under an older value is
# void. Global rather than per link: issuing and revoking are rare, and a look-up is one read.
_generation = 0


def _void_lookups() -> None:
    global _generation
    _generation += 1


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class FeedRecord:
    link: LinkKey
    calendar_name: str


class FeedTokenRepository:
    def __init__(self, storage: StoragePort) -> None:
        self._feeds = storage.table(FEEDS)
        self._owners = storage.table(OWNERS)

    async def issue(self, link: LinkKey, calendar_name: str) -> str:
        """Create the resource's token, or rotate it: the old token stops working — in this process
        at once, on other instances within ``LOOKUP_TTL``."""
        token = secrets.token_urlsafe(32)  # 256 bits
        await self.revoke(link)
        digest = token_hash(token)
        await self._feeds.insert({"PartitionKey": digest, "RowKey": "", "link": str(link),
                                  "calendar_name": calendar_name})
        await self._owners.upsert({"PartitionKey": encode_key(str(link)), "RowKey": "", "token_hash": digest})
        return token

    async def revoke(self, link: LinkKey) -> bool:
        _void_lookups()
        owner = await self._owners.get(encode_key(str(link)), "")
        if owner is None:
            return False
        await self._feeds.delete(owner["token_hash"], "")
        await self._owners.delete(encode_key(str(link)), "")
        _void_lookups()  # again: a look-up that read the row while it was being deleted
        return True

    async def resolve(self, token: str) -> FeedRecord | None:
        if not _TOKEN.match(token):
            return None
        row = await self._feeds.get(token_hash(token), "")
        if row is None:
            return None
        return FeedRecord(LinkKey.parse(row["link"]), str(row.get("calendar_name", "")))


@dataclass(frozen=True)
class _Lookup:
    record: FeedRecord
    expires: float
    generation: int


class TokenLookups:
    """Successful token look-ups of this process, each kept for ``ttl`` seconds. Unknown tokens
    are not kept: a newly issued token works at once, everywhere."""

    def __init__(self, ttl: float = LOOKUP_TTL, *, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = 4096) -> None:
        self._ttl = ttl
        self._clock = clock
        self._max = max_entries
        self._items: OrderedDict[str, _Lookup] = OrderedDict()

    async def resolve(self, tokens: FeedTokenRepository, token: str) -> FeedRecord | None:
        if not _TOKEN.match(token):
            return None
        digest = token_hash(token)
        hit = self._items.get(digest)
        if hit is not None and hit.generation == _generation and hit.expires > self._clock():
            return hit.record
        generation = _generation  # taken before the read, so a revoke during it voids the result
        record = await tokens.resolve(token)
        if record is None:
            self._items.pop(digest, None)
            return None
        self._items[digest] = _Lookup(record, self._clock() + self._ttl, generation)
        self._items.move_to_end(digest)
        while len(self._items) > self._max:
            self._items.popitem(last=False)
        return record
