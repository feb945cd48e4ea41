"""Azure Storage queues for the local host: connections, the queue trigger and queue outputs.

The listener follows the Storage extension's rules from host.json ``extensions.queues``:
fetch ``batchSize`` messages, fetch again once no more than ``newBatchThreshold`` are still running,
back off exponentially up to ``maxPollingInterval`` while the queue is empty (and poll at once when
this host itself just wrote to the queue), make a failed message visible again after
``visibilityTimeout``, and move it to ``<queue>-poison`` after ``maxDequeueCount`` failed attempts.
A message that cannot be decoded (not base64 while messageEncoding is base64) goes to the poison
queue at once, since retrying cannot help. Poison copies keep the stored text unchanged.

Connections are app settings named by the binding, resolved like the host does: a connection
string, or identity-based ``<name>__queueServiceUri`` / ``<name>__accountName`` (with
``__credential``, ``__clientId``, ``__tenantId``, ``__clientSecret``). Values are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError
from azure.functions import _abc as func_abc
from azure.functions.queue import QueueMessage as FuncQueueMessage
from azure.storage.queue import QueueMessage as StorageMessage
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from devtools.devhost.config import MIN_POLLING_INTERVAL, ConfigError, QueueOptions
from devtools.devhost.invoke import FunctionRunner, Spawner
from devtools.devhost.metadata import FunctionSpec, QueueOutputSpec

log = logging.getLogger("devtools.devhost")

# Messages are fetched invisible for this long and the lease renewed at half of it, as the
# real listener does; a failure then sets the host.json visibilityTimeout instead.
FETCH_VISIBILITY_SECONDS = 600
POISON_SUFFIX = "-poison"
_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


def validate_queue_name(name: str, *, what: str, trigger: bool) -> str:
    if not _QUEUE_NAME.match(name):
        raise ConfigError(f"{what}: {name!r} is not a valid queue name (3-63 chars: a-z, 0-9, single hyphens)")
    if trigger and len(name) + len(POISON_SUFFIX) > 63:
        raise ConfigError(f"{what}: queue name {name!r} leaves no room for the '{POISON_SUFFIX}' suffix")
    return name


def describe_error(exc: BaseException) -> str:
    """Status and error code only: SDK messages can quote request URLs that carry SAS tokens."""
    if isinstance(exc, HttpResponseError):
        return f"{type(exc).__name__}(status={exc.status_code}, code={exc.error_code})"
    return type(exc).__name__


@dataclass(frozen=True)
class QueueConnection:
    """A resolved storage connection; ``key`` identifies the account without holding a secret."""

    setting: str
    key: str
    connection_string: str | None = field(default=None, repr=False)
    account_url: str | None = None
    credential: Literal["default", "managedidentity", "clientsecret"] | None = None
    client_id: str | None = None
    tenant_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)


def _account_key(connection_string: str) -> str:
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    if connection_string.strip().lower().startswith("usedevelopmentstorage=true"):
        return "devstoreaccount1@devstorage"
    return f"{parts.get('AccountName', '')}@{parts.get('QueueEndpoint', parts.get('EndpointSuffix', ''))}"


def resolve_connection(name: str | None, env: Mapping[str, str]) -> QueueConnection:
    """Find the storage connection the binding names: ``AzureWebJobs<name>`` first, then ``<name>``;
    the value itself as a connection string, else its ``__`` children for identity-based access."""
    name = name or "AzureWebJobsStorage"
    lowered = {k.lower(): v for k, v in env.items()}
    for setting in (f"AzureWebJobs{name}", name):
        prefix = setting.lower()
        value = lowered.get(prefix)
        if value:
            return QueueConnection(setting=setting, key=_account_key(value), connection_string=value)

        def child(key: str, prefix: str = prefix) -> str | None:
            return lowered.get(f"{prefix}__{key.lower()}") or None

        url = child("queueServiceUri")
        account = child("accountName")
        if url is None and account:
            url = f"https://{account}.queue.core.windows.net"
        if url is None:
            continue
        kind = (child("credential") or "").lower()
        secret = child("clientSecret")
        credential: Literal["default", "managedidentity", "clientsecret"]
        if kind == "managedidentity":
            credential = "managedidentity"
        elif secret:
            credential = "clientsecret"
        else:
            credential = "default"
        if credential == "clientsecret" and not (child("tenantId") and child("clientId")):
            raise ConfigError(f"connection {setting}: __clientSecret needs __tenantId and __clientId")
        return QueueConnection(setting=setting, key=url.rstrip("/").lower(), account_url=url.rstrip("/"),
                               credential=credential, client_id=child("clientId"), tenant_id=child("tenantId"),
                               client_secret=secret)
    raise ConfigError(f"storage connection {name!r} is not configured: set {name} to a connection string, "
                      f"or {name}__queueServiceUri / {name}__accountName for identity-based access")


def decode_content(content: str, encoding: str) -> bytes:
    """Stored text → body bytes; raises ValueError if base64 is expected and the text is not."""
    if encoding == "none":
        return content.encode("utf-8")
    try:
        return base64.b64decode(content.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("message is not valid base64") from exc


def encode_outputs(value: Any, encoding: str) -> list[str]:
    """What a function set on a queue output → the texts to store (one per message)."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    texts: list[str] = []
    for item in items:
        if isinstance(item, func_abc.QueueMessage):
            data = item.get_body()
        elif isinstance(item, str):
            data = item.encode("utf-8")
        elif isinstance(item, bytes | bytearray):
            data = bytes(item)
        else:
            raise TypeError(f"queue output accepts str, bytes, QueueMessage or a list of them, not "
                            f"{type(item).__name__}")
        texts.append(base64.b64encode(data).decode("ascii") if encoding == "base64" else data.decode("utf-8"))
    return texts


class QueueClients:
    """Async clients per account and queue, created on the host's loop (aiohttp is loop-bound)."""

    def __init__(self) -> None:
        self._services: dict[str, QueueServiceClient] = {}
        self._queues: dict[tuple[str, str], QueueClient] = {}
        self._ensured: set[tuple[str, str]] = set()
        self._credentials: list[Any] = []

    def _service(self, conn: QueueConnection) -> QueueServiceClient:
        service = self._services.get(conn.key)
        if service is None:
            if conn.connection_string:
                service = QueueServiceClient.from_connection_string(conn.connection_string)
            else:
                service = QueueServiceClient(str(conn.account_url), credential=self._make_credential(conn))
            self._services[conn.key] = service
        return service

    def _make_credential(self, conn: QueueConnection) -> Any:
        from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential, ManagedIdentityCredential

        credential: Any
        if conn.credential == "managedidentity":
            credential = ManagedIdentityCredential(client_id=conn.client_id) if conn.client_id \
                else ManagedIdentityCredential()
        elif conn.credential == "clientsecret":
            credential = ClientSecretCredential(str(conn.tenant_id), str(conn.client_id), str(conn.client_secret))
        else:
            credential = DefaultAzureCredential(managed_identity_client_id=conn.client_id)
        self._credentials.append(credential)
        return credential

    def queue(self, conn: QueueConnection, name: str) -> QueueClient:
        client = self._queues.get((conn.key, name))
        if client is None:
            # No encode/decode policy: the host applies messageEncoding itself, and poison copies
            # must keep the stored text byte for byte.
            client = self._service(conn).get_queue_client(name)
            self._queues[(conn.key, name)] = client
        return client

    async def ensure(self, conn: QueueConnection, name: str) -> QueueClient:
        """The queue client, creating the queue on first use like the host's bindings do."""
        client = self.queue(conn, name)
        if (conn.key, name) not in self._ensured:
            with contextlib.suppress(ResourceExistsError):
                await client.create_queue()
            self._ensured.add((conn.key, name))
        return client

    async def close(self) -> None:
        for client in self._queues.values():
            await client.close()
        for service in self._services.values():
            await service.close()
        for credential in self._credentials:
            await credential.close()
        self._queues.clear()
        self._services.clear()
        self._credentials.clear()


@dataclass
class _Lease:
    """A received message's current pop receipt; every update hands out a new one."""

    message_id: str
    pop_receipt: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(kw_only=True, eq=False, repr=False)
class QueueListener:
    """Polls one queue for one function and runs the function per message."""

    spec: FunctionSpec
    queue_name: str
    connection: QueueConnection
    clients: QueueClients
    options: QueueOptions
    runner: FunctionRunner
    spawn: Spawner
    _active: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _ready: bool = field(default=False, init=False)

    def wake(self) -> None:
        """Poll now: this host has just written to the queue (the real host's shared queue watcher)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()

    async def prepare(self) -> bool:
        """Create the queue; False (and logged) if storage is not reachable yet."""
        try:
            await self.clients.ensure(self.connection, self.queue_name)
        except AzureError as exc:
            log.error("Queue trigger %s cannot reach queue %r on %s: %s", self.spec.name, self.queue_name,
                      self.connection.setting, describe_error(exc))
            return False
        self._ready = True
        return True

    async def run(self) -> None:
        options = self.options
        delay = MIN_POLLING_INTERVAL.total_seconds()
        max_delay = options.max_polling_interval.total_seconds()
        client = self.clients.queue(self.connection, self.queue_name)
        failing = False
        while not self._stopping.is_set():
            if not self._ready and not await self.prepare():
                await self._idle(delay)
                delay = min(delay * 2, max_delay)
                continue
            if len(self._active) > options.new_batch_threshold:
                await self._wait_for_capacity()
                continue
            # Cleared before the receive, so a write that lands during it still cuts the next wait short.
            self._wake.clear()
            try:
                messages = [m async for m in client.receive_messages(
                    messages_per_page=options.batch_size, max_messages=options.batch_size,
                    visibility_timeout=FETCH_VISIBILITY_SECONDS)]
            except AzureError as exc:
                if not failing:  # once per outage, not once per poll
                    log.warning("Polling queue %r for %s failed: %s", self.queue_name, self.spec.name,
                                describe_error(exc))
                failing = True
                messages = []
            else:
                if failing:
                    log.info("Polling queue %r for %s works again", self.queue_name, self.spec.name)
                failing = False
            if messages:
                delay = MIN_POLLING_INTERVAL.total_seconds()
                for message in messages:
                    task = self.spawn(self._process(client, message))
                    self._active.add(task)
                    task.add_done_callback(self._active.discard)
                continue
            await self._idle(delay)
            delay = min(delay * 2, max_delay)

    async def _idle(self, seconds: float) -> None:
        stop = asyncio.ensure_future(self._stopping.wait())
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({stop, wake}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            wake.cancel()

    async def _wait_for_capacity(self) -> None:
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({stop, *self._active}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()

    async def _process(self, client: QueueClient, message: StorageMessage) -> None:
        options = self.options
        lease = _Lease(str(message.id), str(message.pop_receipt))
        count = int(message.dequeue_count or 0)
        if count > options.max_dequeue_count:
            # Attempts ran out while this host was not looking (a crash mid-invocation, say).
            await self._poison(client, message, lease, reason=f"dequeue count {count} exceeds maxDequeueCount")
            return
        try:
            body = decode_content(str(message.content or ""), options.message_encoding)
        except ValueError:
            await self._poison(client, message, lease, reason="it is not valid base64 (messageEncoding is base64)")
            return
        keepalive = asyncio.ensure_future(self._keep_invisible(client, lease))
        try:
            result = await self.runner.run(self.spec, self._trigger_value(message, body), dequeue_count=count)
        except asyncio.CancelledError:
            # Shutdown gave up waiting: hand the message back at once instead of after the fetch lease.
            keepalive.cancel()
            await self._release(client, lease, 0)
            raise
        finally:
            keepalive.cancel()
        if result.ok:
            try:
                async with lease.lock:
                    await client.delete_message(lease.message_id, lease.pop_receipt)
            except AzureError as exc:
                log.warning("Could not delete message %s from %r after success: %s", lease.message_id,
                            self.queue_name, describe_error(exc))
        elif count >= options.max_dequeue_count:
            await self._poison(client, message, lease, reason=f"it has reached MaxDequeueCount of "
                                                              f"{options.max_dequeue_count}")
        else:
            await self._release(client, lease, int(options.visibility_timeout.total_seconds()))

    def _trigger_value(self, message: StorageMessage, body: bytes) -> Any:
        annotation = self.spec.trigger_annotation
        if annotation is str:
            return body.decode("utf-8")
        if annotation is bytes:
            return body
        return FuncQueueMessage(id=message.id, body=body, dequeue_count=message.dequeue_count,
                                expiration_time=message.expires_on, insertion_time=message.inserted_on,
                                time_next_visible=message.next_visible_on, pop_receipt=message.pop_receipt)

    async def _keep_invisible(self, client: QueueClient, lease: _Lease) -> None:
        while True:
            await asyncio.sleep(FETCH_VISIBILITY_SECONDS / 2)
            try:
                async with lease.lock:
                    updated = await client.update_message(lease.message_id, pop_receipt=lease.pop_receipt,
                                                          visibility_timeout=FETCH_VISIBILITY_SECONDS)
                    lease.pop_receipt = str(updated.pop_receipt)
            except AzureError as exc:
                log.warning("Could not renew the lease of message %s: %s", lease.message_id, describe_error(exc))

    async def _release(self, client: QueueClient, lease: _Lease, seconds: int) -> None:
        try:
            async with lease.lock:
                await client.update_message(lease.message_id, pop_receipt=lease.pop_receipt,
                                            visibility_timeout=seconds)
        except AzureError as exc:
            log.warning("Could not release message %s on %r: %s", lease.message_id, self.queue_name,
                        describe_error(exc))

    async def _poison(self, client: QueueClient, message: StorageMessage, lease: _Lease, *, reason: str) -> None:
        poison_name = self.queue_name + POISON_SUFFIX
        log.warning("Message %s on %r: %s. Moving message to queue %r.", lease.message_id, self.queue_name,
                    reason, poison_name)
        try:
            poison = await self.clients.ensure(self.connection, poison_name)
            await poison.send_message(message.content)
            async with lease.lock:
                await client.delete_message(lease.message_id, lease.pop_receipt)
        except AzureError as exc:
            log.error("Could not move message %s to %r: %s", lease.message_id, poison_name, describe_error(exc))


@dataclass(frozen=True)
class ResolvedOutput:
    connection: QueueConnection
    queue_name: str


class OutputDelivery:
    """Writes queue outputs after a successful invocation, then wakes a local listener on that queue."""

    def __init__(self, *, clients: QueueClients, encoding: str,
                 resolved: Mapping[tuple[str, str], ResolvedOutput],
                 listeners: Callable[[], list[QueueListener]]) -> None:
        self._clients = clients
        self._encoding = encoding
        self._resolved = resolved
        self._listeners = listeners

    async def deliver(self, spec: FunctionSpec, outputs: dict[QueueOutputSpec, Any]) -> None:
        batches = []
        # Encode everything first so a bad value fails the invocation before any message is sent.
        for output, value in outputs.items():
            target = self._resolved[(spec.name, output.arg_name)]
            batches.append((target, encode_outputs(value, self._encoding)))
        for target, texts in batches:
            if not texts:
                continue
            client = await self._clients.ensure(target.connection, target.queue_name)
            for text in texts:
                await client.send_message(text)
            for listener in self._listeners():
                if listener.connection.key == target.connection.key and listener.queue_name == target.queue_name:
                    listener.wake()
