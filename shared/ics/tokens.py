"""Secret feed tokens, one per resource. Only the token's SHA-256 is stored.

``icsfeeds``      PK sha256(token) → provider, resource, calendar name (the feed's look-up)
``icsfeedowners`` PK provider|resource → current token hash (for rotation and revocation)

A look-up is by hash, so no stored secret is ever compared with user input; unknown and
revoked tokens are indistinguishable (both: no row).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from shared.domain import LinkKey
from shared.storage.base import StoragePort, encode_key

FEEDS = "icsfeeds"
OWNERS = "icsfeedowners"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43,64}$")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class FeedRecord:
    link: LinkKey
    calendar_name: str


class FeedTokens:
    def __init__(self, storage: StoragePort) -> None:
        self._feeds = storage.table(FEEDS)
        self._owners = storage.table(OWNERS)

    async def issue(self, link: LinkKey, calendar_name: str) -> str:
        """Create the resource's token, or rotate it: the old token stops working at once."""
        token = secrets.token_urlsafe(32)  # 256 bits
        await self.revoke(link)
        digest = token_hash(token)
        await self._feeds.insert({"PartitionKey": digest, "RowKey": "", "link": str(link),
                                  "calendar_name": calendar_name})
        await self._owners.upsert({"PartitionKey": encode_key(str(link)), "RowKey": "", "token_hash": digest})
        return token

    async def revoke(self, link: LinkKey) -> bool:
        owner = await self._owners.get(encode_key(str(link)), "")
        if owner is None:
            return False
        await self._feeds.delete(owner["token_hash"], "")
        await self._owners.delete(encode_key(str(link)), "")
        return True

    async def has_feed(self, link: LinkKey) -> bool:
        return await self._owners.get(encode_key(str(link)), "") is not None

    async def resolve(self, token: str) -> FeedRecord | None:
        if not _TOKEN.match(token):
            return None
        row = await self._feeds.get(token_hash(token), "")
        if row is None:
            return None
        return FeedRecord(LinkKey.parse(row["link"]), str(row.get("calendar_name", "")))
