"""An entity-group transaction of upserts as one plain ``$batch`` REST request.

The sync worker stores a page's status rows (up to 100, one partition) in one transaction. Through
the tables SDK that cost about as much CPU as everything else the worker does per event: the SDK
builds each sub-request with ``http.client`` and the MIME multipart with the ``email`` package, and
parses the answer the same way. This writes the same transaction — each row an Insert-Or-Replace
``PUT``, serialised by the SDK's own entity serialiser so the stored types are identical — as a
multipart body built by string formatting, signed as the SDK signs it (SharedKey for tables, or a
Microsoft Entra token for identity-based storage).

A transaction is all or nothing on the service side; the answer says so in one status line per
operation (all 2xx) or one error line. Anything but a clean success raises ``RestBatchFailed``, and
the caller (``AzureTable.upsert_many``) sends the chunk through the SDK instead — the upserts are
idempotent, so a chunk that did land is only written again.

The same transaction can carry Insert operations instead (``RestTableBatch.insert``) for rows the
caller believes new (``TablePort.upsert_new_many``): one row that exists fails the whole
transaction with 409, and the caller writes the chunk as upserts.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

import aiohttp
from azure.data.tables._serialize import _add_entity_properties, _prepare_key

from shared.storage.queue_rest import StorageRestClient

API_VERSION = "2019-02-02"
#: a transaction of 100 rows is one request; a slow one must not hang the worker's round
BATCH_TIMEOUT_SECONDS = 30.0
_STATUS_LINE = re.compile(rb"^HTTP/1\.1 (\d{3})", re.MULTILINE)


class RestBatchFailed(Exception):
    """The REST transaction did not report a clean success (the SDK path takes over)."""


def table_shared_key(key: str, account: str, path: str, headers: Mapping[str, str]) -> str:
    """``Authorization`` for the Table service's SharedKey: VERB, Content-MD5, Content-Type, Date
    (x-ms-date), canonicalised resource."""
    import base64
    import hashlib
    import hmac

    lower = {k.lower(): v for k, v in headers.items()}
    to_sign = "\n".join(["POST", lower.get("content-md5", ""), lower.get("content-type", ""),
                         lower.get("x-ms-date", ""), f"/{account}{path}"])
    digest = hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()
    return f"SharedKey {account}:{base64.b64encode(digest).decode()}"


def batch_body(endpoint: str, table: str, rows: Sequence[Mapping[str, Any]], boundary: str,
               changeset: str, *, insert: bool = False) -> bytes:
    """The multipart ``$batch`` body of one changeset of Insert-Or-Replace operations (``insert``:
    Insert operations, which fail the transaction if a row exists)."""
    import json

    parts = [f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"]
    for row in rows:
        pk, rk = quote(_prepare_key(str(row["PartitionKey"])), safe=""), quote(_prepare_key(str(row["RowKey"])),
                                                                              safe="")
        entity = json.dumps(_add_entity_properties(row), separators=(",", ":"))
        target = f"POST {endpoint}/{table}" if insert else f"PUT {endpoint}/{table}(PartitionKey='{pk}',RowKey='{rk}')"
        parts.append(f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                     f"{target} HTTP/1.1\r\n"
                     "Content-Type: application/json\r\nAccept: application/json;odata=minimalmetadata\r\n"
                     f"Prefer: return-no-content\r\nDataServiceVersion: 3.0\r\n\r\n{entity}\r\n")
    parts.append(f"--{changeset}--\r\n--{boundary}--\r\n")
    return "".join(parts).encode()


class RestTableBatch(StorageRestClient):
    """``$batch`` of upserts (or inserts) over a reused session."""

    def __init__(self, endpoint: str, account: str, **kw: Any) -> None:
        kw.setdefault("timeout", BATCH_TIMEOUT_SECONDS)
        super().__init__(endpoint, account, **kw)

    async def upsert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert-or-replace ``rows`` (one partition, at most 100) in one transaction."""
        await self._transaction(table, rows, insert=False)

    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (one partition, at most 100) in one transaction; ``RestBatchFailed``, and
        nothing written, if one of them exists."""
        await self._transaction(table, rows, insert=True)

    async def _transaction(self, table: str, rows: Sequence[Mapping[str, Any]], *, insert: bool) -> None:
        boundary, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
        body = batch_body(self.endpoint, table, rows, boundary, changeset, insert=insert)
        path = f"{self._path}/$batch"
        headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": API_VERSION,
                   "Content-Type": f"multipart/mixed; boundary={boundary}", "DataServiceVersion": "3.0",
                   "MaxDataServiceVersion": "3.0;NetFx", "Accept": "application/json;odata=minimalmetadata"}
        if self._key:
            headers["Authorization"] = table_shared_key(self._key, self.account, path, headers)
        else:
            headers["Authorization"] = f"Bearer {await self._bearer()}"
        try:
            async with self._session().post(f"{self.endpoint}/$batch", data=body, headers=headers) as response:
                answer = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RestBatchFailed(type(exc).__name__) from exc
        statuses = [int(s) for s in _STATUS_LINE.findall(answer)]
        if status != 202 or len(statuses) != len(rows) or any(not 200 <= s < 300 for s in statuses):
            raise RestBatchFailed(f"HTTP {status}, operations {sorted(set(statuses))}")
