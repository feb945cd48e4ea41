"""Azure Table Storage and Queue Storage adapter (Azurite locally).

Clients are async (``.aio``) because every function runs on the worker's event loop;
a blocking call would stall every other invocation. aiohttp sessions belong to one
event loop, so clients are created per loop and cached for it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import EntityProperty, TableErrorCode, TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from shared.config import Settings
from shared.errors import Conflict, NotFound, StorageError
from shared.storage.base import (
    Entity,
    QueuePort,
    StoragePort,
    TablePort,
    check_clauses,
    chunks,
    dumps,
    one_partition,
)

if TYPE_CHECKING:
    from shared.storage.table_batch_rest import RestTableBatch

_SYSTEM = {"Timestamp", "etag", "odata.etag", "odata.metadata"}


def _plain(value: Any) -> Any:
    if isinstance(value, EntityProperty):
        value = value.value
    if isinstance(value, datetime):
        # TablesEntityDatetime is a datetime subclass carrying tables metadata; hand out a plain one.
        plain = datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                         value.microsecond, tzinfo=value.tzinfo or UTC)
        return plain
    return value


def _to_entity(raw: Mapping[str, Any], etag: str | None = None) -> Entity:
    meta = getattr(raw, "metadata", {}) or {}
    out = Entity({k: _plain(v) for k, v in raw.items() if k not in _SYSTEM}, etag=etag or meta.get("etag", ""))
    ts = meta.get("timestamp")
    if ts is not None:
        out["Timestamp"] = _plain(ts)
    return out


def _clean(entity: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in entity.items():
        if key in _SYSTEM or value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**31) <= value < 2**31:
            from azure.data.tables import EdmType

            value = EntityProperty(value, EdmType.INT64)
        out[key] = value
    return out


def _odata_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


class AzureTable(TablePort):
    def __init__(self, owner: AzureStorage, name: str) -> None:
        self._owner = owner
        self.name = name

    async def _client(self) -> TableClient:
        return await self._owner._table_client(self.name)

    async def get(self, pk: str, rk: str) -> Entity | None:
        client = await self._client()
        try:
            raw = await client.get_entity(pk, rk)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise StorageError(f"reading {self.name} failed: {type(exc).__name__}") from exc
        return _to_entity(raw)

    async def insert(self, entity: Mapping[str, Any]) -> Entity:
        client = await self._client()
        try:
            meta = await client.create_entity(_clean(entity))
        except ResourceExistsError as exc:
            raise Conflict(f"row already exists in {self.name}") from exc
        except AzureError as exc:
            raise StorageError(f"writing {self.name} failed: {type(exc).__name__}") from exc
        return Entity(_clean(entity), etag=meta["etag"])

    async def upsert(self, entity: Mapping[str, Any]) -> Entity:
        client = await self._client()
        try:
            meta = await client.upsert_entity(_clean(entity), mode=UpdateMode.REPLACE)
        except AzureError as exc:
            raise StorageError(f"writing {self.name} failed: {type(exc).__name__}") from exc
        return Entity(_clean(entity), etag=meta["etag"])

    async def update(self, entity: Mapping[str, Any], *, etag: str) -> Entity:
        client = await self._client()
        try:
            meta = await client.update_entity(_clean(entity), mode=UpdateMode.REPLACE, etag=etag,
                                              match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError as exc:
            raise Conflict(f"row in {self.name} was changed by someone else") from exc
        except ResourceNotFoundError as exc:
            raise NotFound(f"row not found in {self.name}") from exc
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise Conflict(f"row in {self.name} was changed by someone else") from exc
            raise StorageError(f"writing {self.name} failed: HTTP {exc.status_code}") from exc
        except AzureError as exc:
            raise StorageError(f"writing {self.name} failed: {type(exc).__name__}") from exc
        return Entity(_clean(entity), etag=meta["etag"])

    async def delete(self, pk: str, rk: str, *, etag: str | None = None) -> bool:
        client = await self._client()
        try:
            if etag is None:
                # delete_entity succeeds silently on a missing row; read first to report it.
                existing = await client.get_entity(pk, rk)
                await client.delete_entity(pk, rk, etag=existing.metadata["etag"],
                                           match_condition=MatchConditions.IfNotModified)
            else:
                await client.delete_entity(pk, rk, etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            return False
        except ResourceModifiedError as exc:
            if etag is None:  # changed between our read and delete: delete unconditionally
                await client.delete_entity(pk, rk)
                return True
            raise Conflict(f"row in {self.name} was changed by someone else") from exc
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise Conflict(f"row in {self.name} was changed by someone else") from exc
            raise StorageError(f"deleting from {self.name} failed: HTTP {exc.status_code}") from exc
        except AzureError as exc:
            raise StorageError(f"deleting from {self.name} failed: {type(exc).__name__}") from exc
        return True

    async def query(self, pk: str | None = None, *, equals: Mapping[str, Any] | None = None,
                    limit: int | None = None) -> list[Entity]:
        client = await self._client()
        clauses = []
        if pk is not None:
            clauses.append(f"PartitionKey eq {_odata_literal(pk)}")
        for key, value in (equals or {}).items():
            clauses.append(f"{key} eq {_odata_literal(value)}")
        out: list[Entity] = []
        try:
            if clauses:
                pager = client.query_entities(" and ".join(clauses), results_per_page=limit)
            else:
                pager = client.list_entities(results_per_page=limit)
            async for raw in pager:
                out.append(_to_entity(raw))
                if limit is not None and len(out) >= limit:
                    break
        except AzureError as exc:
            raise StorageError(f"querying {self.name} failed: {type(exc).__name__}") from exc
        return out


    async def query_where(self, pk: str, clauses: Sequence[tuple[str, str, Any]]) -> list[Entity]:
        # The filter runs in the store: only matching rows cross the wire and get parsed (a
        # 10,000-row partition read whole costs ~0.85 s on Azurite, filtered to a day ~30 ms).
        client = await self._client()
        parameters: dict[str, Any] = {"pk": pk}
        terms = ["PartitionKey eq @pk"]
        for n, (field, op, value) in enumerate(check_clauses(clauses)):
            parameters[f"v{n}"] = value
            terms.append(f"{field} {op} @v{n}")
        try:
            return [_to_entity(raw) async for raw in client.query_entities(" and ".join(terms), parameters=parameters)]
        except AzureError as exc:
            raise StorageError(f"querying {self.name} failed: {type(exc).__name__}") from exc

    async def upsert_many(self, entities: Sequence[Mapping[str, Any]]) -> None:
        rows = one_partition(entities)
        if not rows:
            return
        client = await self._client()
        rest = self._owner.rest_table_batch()
        for chunk in chunks(rows):
            if rest is not None:
                from shared.storage.table_batch_rest import RestBatchFailed

                try:
                    # The SDK's transaction machinery cost the sync worker as much CPU as the rest of
                    # its work per event (shared/storage/table_batch_rest.py).
                    await rest.upsert(self._owner.prefix + self.name, [_clean(row) for row in chunk])
                    continue
                except RestBatchFailed:
                    pass  # the SDK path below, with its retries and error mapping
            operations: list[Any] = [("upsert", _clean(row), {"mode": UpdateMode.REPLACE}) for row in chunk]
            try:
                await client.submit_transaction(operations)
            except AzureError as exc:
                raise StorageError(f"batch writing {self.name} failed: {_failure(exc)}") from exc

    async def upsert_new_many(self, entities: Sequence[Mapping[str, Any]]) -> None:
        rows = one_partition(entities)
        rest = self._owner.rest_table_batch()
        if not rows or rest is None:
            await self.upsert_many(rows)
            return
        await self._client()  # the table exists before the first transaction
        from shared.storage.table_batch_rest import RestBatchFailed

        for chunk in chunks(rows):
            try:
                # Inserts, not Insert-Or-Replace: the same one transaction per chunk on Azure, but
                # Azurite's Insert-Or-Replace costs time growing with the rows of the partition,
                # which made a first sync's status rows quadratic in the calendar (bench/results.md, 5).
                await rest.insert(self._owner.prefix + self.name, [_clean(row) for row in chunk])
            except RestBatchFailed:
                # A row existed after all (the transaction then wrote nothing), or the REST path
                # failed: the chunk goes as upserts, which end the same either way.
                await self.upsert_many(chunk)

    async def delete_many(self, pk: str, rks: Sequence[str]) -> None:
        keys = list(dict.fromkeys(rks))
        if not keys:
            return
        client = await self._client()
        for chunk in chunks(keys):
            operations: list[Any] = [("delete", {"PartitionKey": pk, "RowKey": rk}) for rk in chunk]
            try:
                await client.submit_transaction(operations)
                continue
            except TableTransactionError as exc:
                if exc.status_code != 404 and exc.error_code != TableErrorCode.RESOURCE_NOT_FOUND:
                    raise StorageError(f"batch deleting from {self.name} failed: {_failure(exc)}") from exc
            except AzureError as exc:
                raise StorageError(f"batch deleting from {self.name} failed: {_failure(exc)}") from exc
            # A row of the chunk was gone already, which fails the whole transaction. Rare (a replay
            # after a crash): delete one by one then, where a missing row is no error.
            try:
                for rk in chunk:
                    await client.delete_entity(pk, rk)
            except AzureError as exc:
                raise StorageError(f"deleting from {self.name} failed: {_failure(exc)}") from exc


def _failure(exc: AzureError) -> str:
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}" if status else type(exc).__name__


class AzureQueue(QueuePort):
    def __init__(self, owner: AzureStorage, name: str) -> None:
        self._owner = owner
        self.name = name

    async def send(self, message: Mapping[str, Any], *, delay_seconds: float = 0) -> None:
        client = await self._owner._queue_client(self.name)
        try:
            await client.send_message(dumps(message), visibility_timeout=int(max(0, round(delay_seconds))) or None)
        except AzureError as exc:
            raise StorageError(f"enqueue to {self.name} failed: {type(exc).__name__}") from exc

    async def peek_count(self) -> int:
        client = await self._owner._queue_client(self.name)
        try:
            props = await client.get_queue_properties()
        except AzureError as exc:
            raise StorageError(f"reading {self.name} failed: {type(exc).__name__}") from exc
        return int(props.approximate_message_count or 0)


class _LoopClients:
    def __init__(self, tables: TableServiceClient, queues: QueueServiceClient, credential: Any) -> None:
        self.tables = tables
        self.queues = queues
        self.credential = credential
        self.table_clients: dict[str, TableClient] = {}
        self.queue_clients: dict[str, QueueClient] = {}
        self._creation_locks: dict[tuple[str, str], asyncio.Lock] = {}

    def creating(self, key: tuple[str, str]) -> asyncio.Lock:
        """The lock that serialises creating one table or queue (clients are per loop already)."""
        lock = self._creation_locks.get(key)
        if lock is None:
            lock = self._creation_locks[key] = asyncio.Lock()
        return lock


ClientT = TypeVar("ClientT")


async def _created(clients: _LoopClients, cache: dict[str, ClientT], key: tuple[str, str],
                   create: Callable[[], Awaitable[ClientT]]) -> ClientT:
    """The cached client of a table or queue, creating the table or queue on first use.

    One creation per name and loop; a client is cached only once its table or queue exists, so a
    concurrent caller never writes to one that is not there yet, and a failed creation (storage
    briefly unreachable) is tried again by the next call instead of never."""
    kind, name = key
    client = cache.get(name)
    if client is not None:
        return client
    async with clients.creating(key):
        client = cache.get(name)
        if client is None:
            try:
                client = await create()
            except AzureError as exc:
                raise StorageError(f"creating {kind} {name} failed: {type(exc).__name__}") from exc
            cache[name] = client
        return client


class AzureStorage(StoragePort):
    """Connection string (Azurite, dev) or identity-based (``AzureWebJobsStorage__*`` in Azure)."""

    def __init__(self, *, connection_string: str = "", account_name: str = "", table_service_uri: str = "",
                 queue_service_uri: str = "", table_prefix: str = "") -> None:
        self._conn = connection_string
        default_table = f"https://{account_name}.table.core.windows.net" if account_name else ""
        default_queue = f"https://{account_name}.queue.core.windows.net" if account_name else ""
        self._table_uri = table_service_uri or default_table
        self._queue_uri = queue_service_uri or default_queue
        if not (self._conn or (self._table_uri and self._queue_uri)):
            raise StorageError("no storage connection configured")
        self.prefix = table_prefix
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients] = (
            weakref.WeakKeyDictionary())

    @classmethod
    def from_settings(cls, settings: Settings, *, table_prefix: str = "") -> AzureStorage:
        return cls(connection_string=settings.storage_connection_string,
                   account_name=settings.storage_account_name,
                   table_service_uri=settings.table_service_uri,
                   queue_service_uri=settings.queue_service_uri,
                   table_prefix=table_prefix)

    def _clients(self) -> _LoopClients:
        loop = asyncio.get_running_loop()
        clients = self._per_loop.get(loop)
        if clients is None:
            if self._conn:
                tables = TableServiceClient.from_connection_string(self._conn)
                queues = QueueServiceClient.from_connection_string(
                    self._conn, message_encode_policy=TextBase64EncodePolicy())
                credential = None
            else:
                from azure.identity.aio import DefaultAzureCredential

                credential = DefaultAzureCredential()
                tables = TableServiceClient(endpoint=self._table_uri, credential=credential)
                queues = QueueServiceClient(account_url=self._queue_uri, credential=credential,
                                            message_encode_policy=TextBase64EncodePolicy())
            clients = _LoopClients(tables, queues, credential)
            self._per_loop[loop] = clients
        return clients

    async def _table_client(self, name: str) -> TableClient:
        clients = self._clients()
        full = self.prefix + name

        async def create() -> TableClient:
            await clients.tables.create_table_if_not_exists(full)
            return clients.tables.get_table_client(full)

        return await _created(clients, clients.table_clients, ("table", full), create)

    async def _queue_client(self, name: str) -> QueueClient:
        clients = self._clients()

        async def create() -> QueueClient:
            client = clients.queues.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy())
            try:
                await client.create_queue()
            except ResourceExistsError:
                pass
            except BaseException:
                await client.close()
                raise
            return client

        return await _created(clients, clients.queue_clients, ("queue", name), create)

    def rest_table_batch(self) -> RestTableBatch | None:
        """The plain-REST transaction client for ``upsert_many`` (None: the SDK does it)."""
        if not hasattr(self, "_rest_batch"):
            from shared.storage.queue_rest import parse_connection_string
            from shared.storage.table_batch_rest import RestTableBatch

            batch: RestTableBatch | None = None
            if self._conn:
                try:
                    endpoint, account, key = parse_connection_string(self._conn, "table")
                    batch = RestTableBatch(endpoint, account, key=key)
                except ValueError:
                    batch = None  # e.g. a SAS-only connection string
            elif self._table_uri:
                from azure.identity.aio import DefaultAzureCredential

                account = urlsplit(self._table_uri).netloc.split(".")[0]
                batch = RestTableBatch(self._table_uri, account, credential=DefaultAzureCredential)
            self._rest_batch = batch
        return self._rest_batch

    def table(self, name: str) -> AzureTable:
        return AzureTable(self, name)

    def queue(self, name: str) -> AzureQueue:
        return AzureQueue(self, name)

    async def ping(self) -> None:
        clients = self._clients()
        try:
            async for _ in clients.tables.list_tables(results_per_page=1):
                break
        except AzureError as exc:
            raise StorageError(f"storage unreachable: {type(exc).__name__}") from exc

    async def close(self) -> None:
        rest = getattr(self, "_rest_batch", None)
        if rest is not None:
            await rest.close()
        loop = asyncio.get_running_loop()
        clients = self._per_loop.pop(loop, None)
        if clients is None:
            return
        for tc in clients.table_clients.values():
            await tc.close()
        for qc in clients.queue_clients.values():
            await qc.close()
        await clients.tables.close()
        await clients.queues.close()
        if clients.credential is not None:
            await clients.credential.close()
