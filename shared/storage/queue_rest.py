"""Queue Storage's Put Message as one plain REST call, for the Graph webhook's hot path.

The storage SDK's pipeline costs ~2.4 ms of CPU per send (policies, XML model, retries, logging);
the webhook makes one send per POST and must answer hundreds a second from one instance. This
sends the same request — ``POST {queue}/messages`` with the message base64-encoded in XML, as the
Functions queue trigger expects — over a reused aiohttp session (one per event loop), signed with
the account key (SharedKey, connection strings and Azurite) or with a Microsoft Entra token for
Queue Storage (identity-based connections, ``AzureWebJobsStorage__*``).

Only sends go this way; a queue is created (and everything else done) by the SDK adapter it wraps:
the first send to each queue in a process goes through it, and so does a send to a queue that was
deleted (the SDK creates it again). A 201 from Put Message means the message is stored: the
webhook's "durable before 202" holds. Every other outcome is a ``StorageError`` within
``SEND_TIMEOUT_SECONDS`` — never the SDK's retries, whose back-off (15 s, 18 s, 24 s, with a 60-s
read timeout) outlasts Graph's 3-s deadline many times over and parked every in-flight POST of an
instance whenever storage hiccuped.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
import weakref
from collections.abc import Callable, Mapping
from email.utils import formatdate
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from shared.errors import StorageError
from shared.storage.base import QueuePort, StoragePort, TablePort, dumps

log = logging.getLogger(__name__)

#: the REST version sent (identity-based auth needs 2017-11-09 or later)
API_VERSION = "2021-02-12"
#: Graph waits 3 s for the answer; a send that takes longer fails so the POST is answered 503 in time
SEND_TIMEOUT_SECONDS = 2.0
#: Azurite's well-known development account (public, documented by Microsoft; not a secret)
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#: scope of a Microsoft Entra token for Queue Storage
STORAGE_SCOPE = "https://storage.azure.com/.default"


class _Token(Protocol):
    token: str
    expires_on: int


class _Credential(Protocol):
    async def get_token(self, *scopes: str) -> _Token: ...


def parse_connection_string(conn: str, service: str = "queue") -> tuple[str, str, str]:
    """(endpoint of ``service`` — queue or table —, account name, account key) of a storage
    connection string. ``ValueError`` when it names no account key (SAS-only strings are not
    supported here)."""
    settings = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in conn.split(";") if p.strip())}
    if settings.get("usedevelopmentstorage", "").lower() == "true":
        port = 10001 if service == "queue" else 10002
        return f"http://127.0.0.1:{port}/{DEV_ACCOUNT}", DEV_ACCOUNT, DEV_KEY
    account, key = settings.get("accountname", ""), settings.get("accountkey", "")
    if not account or not key:
        raise ValueError("the connection string names no account and key")
    endpoint = settings.get(f"{service}endpoint") or (
        f"{settings.get('defaultendpointsprotocol', 'https')}://{account}.{service}."
        f"{settings.get('endpointsuffix', 'core.windows.net')}")
    return endpoint.rstrip("/"), account, key


def shared_key_signature(key: str, account: str, method: str, path: str, headers: Mapping[str, str],
                         query: Mapping[str, str]) -> str:
    """The ``Authorization`` value for Blob/Queue SharedKey (the 2009-09-19+ string to sign)."""
    lower = {k.lower(): v for k, v in headers.items()}
    length = lower.get("content-length", "")
    standard = [lower.get("content-encoding", ""), lower.get("content-language", ""),
                "" if length == "0" else length, lower.get("content-md5", ""), lower.get("content-type", ""),
                lower.get("date", ""), lower.get("if-modified-since", ""), lower.get("if-match", ""),
                lower.get("if-none-match", ""), lower.get("if-unmodified-since", ""), lower.get("range", "")]
    ms = "".join(f"{k}:{v.strip()}\n" for k, v in sorted(lower.items()) if k.startswith("x-ms-"))
    resource = f"/{account}{path}" + "".join(f"\n{k.lower()}:{v}" for k, v in sorted(query.items()))
    to_sign = method + "\n" + "\n".join(standard) + "\n" + ms + resource
    digest = hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()
    return f"SharedKey {account}:{base64.b64encode(digest).decode()}"


def message_body(message: Mapping[str, Any]) -> bytes:
    """The Put Message body: the JSON text base64-encoded (what ``TextBase64EncodePolicy`` sends)."""
    text = base64.b64encode(dumps(message).encode()).decode()
    return f"<?xml version='1.0' encoding='utf-8'?>\n<QueueMessage><MessageText>{text}</MessageText></QueueMessage>" \
        .encode()


class StorageRestClient:
    """A signed storage REST client: one aiohttp session per event loop (sessions belong to one
    loop), SharedKey with an account key or a bearer token from a credential made on first use."""

    def __init__(self, endpoint: str, account: str, *, key: str = "",
                 credential: Callable[[], _Credential] | None = None, timeout: float = SEND_TIMEOUT_SECONDS) -> None:
        if not key and credential is None:
            raise ValueError("either an account key or a credential is needed")
        self.endpoint = endpoint.rstrip("/")
        self.account = account
        self._key = key
        self._make_credential = credential
        self._credential: _Credential | None = None
        self._timeout = timeout
        self._path = urlsplit(self.endpoint).path.rstrip("/")
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
            weakref.WeakKeyDictionary())
        self._token: tuple[str, float] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self.endpoint!r})"

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30), skip_auto_headers=("User-Agent",))
            self._sessions[loop] = session
        return session

    async def _bearer(self) -> str:
        now = time.time()
        if self._token is None or self._token[1] - 300 < now:
            if self._credential is None:
                assert self._make_credential is not None
                self._credential = self._make_credential()
            token = await self._credential.get_token(STORAGE_SCOPE)
            self._token = (token.token, float(token.expires_on))
        return self._token[0]

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        session = self._sessions.pop(loop, None)
        if session is not None:
            await session.close()
        closer = getattr(self._credential, "close", None)
        if closer is not None:
            await closer()
            self._credential = None


class RestQueueSender(StorageRestClient):
    """Put Message over HTTP."""

    async def put(self, queue: str, message: Mapping[str, Any], *, delay_seconds: int = 0) -> int:
        """Send; return the HTTP status (201 when stored). Transport failures raise ``StorageError``."""
        body = message_body(message)
        path = f"{self._path}/{queue}/messages"
        query = {"visibilitytimeout": str(delay_seconds)} if delay_seconds > 0 else {}
        headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": API_VERSION,
                   "Content-Type": "application/xml", "Content-Length": str(len(body))}
        if self._key:
            headers["Authorization"] = shared_key_signature(self._key, self.account, "POST", path, headers, query)
        else:
            headers["Authorization"] = f"Bearer {await self._bearer()}"
        url = f"{self.endpoint}/{queue}/messages"
        try:
            async with self._session().post(url, data=body, headers=headers, params=query) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise StorageError(f"enqueue to {queue} failed: {type(exc).__name__}") from exc


class RestQueue(QueuePort):
    """A queue whose sends take the REST path once the SDK adapter has created the queue."""

    def __init__(self, inner: QueuePort, sender: RestQueueSender, ready: set[str]) -> None:
        self.name = inner.name
        self._inner = inner
        self._sender = sender
        self._ready = ready

    async def send(self, message: Mapping[str, Any], *, delay_seconds: float = 0) -> None:
        if self.name not in self._ready:
            await self._inner.send(message, delay_seconds=delay_seconds)  # creates the queue if need be
            self._ready.add(self.name)
            return
        status = await self._sender.put(self.name, message, delay_seconds=int(max(0, round(delay_seconds))))
        if status == 201:
            return
        if status != 404:
            # No retry here, and no SDK fallback: its retries wait 15 s and more, far past Graph's
            # 3-s deadline — a storage hiccup then parks every in-flight POST (the instance idles,
            # answering nothing). A prompt 503 makes Graph deliver again.
            raise StorageError(f"enqueue to {self.name} failed: HTTP {status}")
        # The queue was deleted: the SDK adapter creates it again.
        log.warning("queue %s is gone; creating it through the storage SDK", self.name)
        self._ready.discard(self.name)
        await self._inner.send(message, delay_seconds=delay_seconds)
        self._ready.add(self.name)

    async def peek_count(self) -> int:
        return await self._inner.peek_count()


class RestQueueStorage(StoragePort):
    """``inner`` with its queues' sends on the REST path; tables and everything else unchanged."""

    def __init__(self, inner: StoragePort, sender: RestQueueSender) -> None:
        self.inner = inner
        self.sender = sender
        self._ready: set[str] = set()

    def table(self, name: str) -> TablePort:
        return self.inner.table(name)

    def queue(self, name: str) -> QueuePort:
        return RestQueue(self.inner.queue(name), self.sender, self._ready)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.sender.close()
        await self.inner.close()


def rest_queue_storage(inner: StoragePort, *, connection_string: str = "", queue_service_uri: str = "",
                       account_name: str = "", credential: Callable[[], _Credential] | None = None) -> StoragePort:
    """``inner`` with REST sends where the settings allow it, else ``inner`` itself (e.g. a SAS-only
    connection string: the SDK path keeps working)."""
    if connection_string:
        try:
            endpoint, account, key = parse_connection_string(connection_string)
        except ValueError:
            return inner
        return RestQueueStorage(inner, RestQueueSender(endpoint, account, key=key))
    endpoint = queue_service_uri or (f"https://{account_name}.queue.core.windows.net" if account_name else "")
    if not endpoint or credential is None:
        return inner
    account = account_name or urlsplit(endpoint).netloc.split(".")[0]
    return RestQueueStorage(inner, RestQueueSender(endpoint, account, credential=credential))
