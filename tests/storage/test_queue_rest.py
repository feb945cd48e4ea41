"""The webhook's REST enqueue (``shared.storage.queue_rest``) against Azurite: what it stores is what
the storage SDK would have stored (the queue trigger reads it alike), its SharedKey signature is one
storage accepts, and sends it cannot complete go through the SDK instead of failing."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from devtools import azurite as azurite_mod
from shared.errors import StorageError
from shared.storage.azure import AzureStorage
from shared.storage.queue_rest import (
    RestQueueSender,
    RestQueueStorage,
    parse_connection_string,
    rest_queue_storage,
    shared_key_signature,
)


def _received(conn: str, queue: str) -> list[dict[str, Any]]:
    client = QueueClient.from_connection_string(conn, queue)
    try:
        raw = [m.content for m in client.receive_messages(max_messages=32)]
    finally:
        client.close()
    return [json.loads(base64.b64decode(text)) for text in raw]


@pytest.fixture
async def lean(azurite: azurite_mod.Azurite) -> Any:
    inner = AzureStorage(connection_string=azurite.connection_string)
    storage = rest_queue_storage(inner, connection_string=azurite.connection_string)
    assert isinstance(storage, RestQueueStorage)
    try:
        yield storage
    finally:
        await storage.close()


async def test_messages_arrive_as_the_sdk_sends_them(lean: RestQueueStorage, azurite: azurite_mod.Azurite) -> None:
    name = "q" + uuid.uuid4().hex[:12]
    queue = lean.queue(name)
    first = {"link": "p|r", "reason": "notification", "n": 1}
    await queue.send(first)  # creates the queue through the SDK
    for n in range(2, 6):
        await queue.send({"link": "p|r", "reason": "notification", "n": n, "text": "Grüße & <tags>"})
    assert [m["n"] for m in _received(azurite.connection_string, name)] == [1, 2, 3, 4, 5]
    assert await queue.peek_count() == 5


async def test_a_direct_put_is_signed_as_storage_expects(lean: RestQueueStorage, azurite: azurite_mod.Azurite) -> None:
    name = "q" + uuid.uuid4().hex[:12]
    await lean.inner.queue(name).send({"warm": True})
    assert await lean.sender.put(name, {"link": "a|b"}) == 201
    assert await lean.sender.put(name, {"link": "a|c"}, delay_seconds=30) == 201
    assert [m.get("link") for m in _received(azurite.connection_string, name)] == [None, "a|b"]  # one hidden 30 s
    endpoint, account, _key = parse_connection_string(azurite.connection_string)
    forged = RestQueueSender(endpoint, account, key=base64.b64encode(b"not the key").decode())
    try:
        assert await forged.put(name, {"link": "x|y"}) == 403
    finally:
        await forged.close()


async def test_a_deleted_queue_is_recreated_through_the_sdk(lean: RestQueueStorage,
                                                            azurite: azurite_mod.Azurite) -> None:
    name = "q" + uuid.uuid4().hex[:12]
    queue = lean.queue(name)
    await queue.send({"n": 1})
    client = QueueClient.from_connection_string(azurite.connection_string, name)
    client.delete_queue()
    client.close()
    await lean.inner.close()  # the SDK adapter's cached client would still believe the queue exists
    lean.inner = AzureStorage(connection_string=azurite.connection_string)
    queue = lean.queue(name)
    await queue.send({"n": 2})
    assert [m["n"] for m in _received(azurite.connection_string, name)] == [2]


async def test_a_refused_send_fails_at_once_instead_of_retrying(lean: RestQueueStorage,
                                                               azurite: azurite_mod.Azurite) -> None:
    name = "q" + uuid.uuid4().hex[:12]
    queue = lean.queue(name)
    await queue.send({"n": 1})
    endpoint, account, _key = parse_connection_string(azurite.connection_string)
    lean.sender = RestQueueSender(endpoint, account, key=base64.b64encode(b"rotated").decode())
    refused = RestQueueStorage(lean.inner, lean.sender)
    refused._ready.add(name)
    try:
        with pytest.raises(StorageError, match="HTTP 403"):
            await refused.queue(name).send({"n": 2})
    finally:
        await lean.sender.close()
    assert [m["n"] for m in _received(azurite.connection_string, name)] == [1]


async def test_unreachable_storage_is_a_storage_error() -> None:
    sender = RestQueueSender("http://127.0.0.1:9/devstoreaccount1", "devstoreaccount1",
                             key=base64.b64encode(b"k").decode())
    try:
        with pytest.raises(StorageError):
            await sender.put("link-sync", {"link": "p|r"})
    finally:
        await sender.close()


def test_connection_strings() -> None:
    conn = ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net")
    assert parse_connection_string(conn) == ("https://acct.queue.core.windows.net", "acct", "a2V5")
    local = "AccountName=dev;AccountKey=a2V5;QueueEndpoint=http://127.0.0.1:10001/dev/;"
    assert parse_connection_string(local) == ("http://127.0.0.1:10001/dev", "dev", "a2V5")
    with pytest.raises(ValueError):
        parse_connection_string("QueueEndpoint=https://x.queue.core.windows.net;SharedAccessSignature=sv=1")


def test_a_sas_only_connection_string_keeps_the_sdk_path() -> None:
    inner = AzureStorage(connection_string="QueueEndpoint=https://x.queue.core.windows.net;"
                                           "TableEndpoint=https://x.table.core.windows.net;SharedAccessSignature=sv=1")
    assert rest_queue_storage(inner, connection_string="QueueEndpoint=https://x;SharedAccessSignature=sv=1") is inner


def test_the_signature_matches_the_documented_string_to_sign() -> None:
    key = base64.b64encode(b"0123456789abcdef").decode()
    headers = {"x-ms-date": "Fri, 04 Dec 2026 21:00:00 GMT", "x-ms-version": "2021-02-12",
               "Content-Type": "application/xml", "Content-Length": "10"}
    signed = shared_key_signature(key, "acct", "POST", "/link-sync/messages", headers, {"visibilitytimeout": "5"})
    expected = ("POST\n\n\n10\n\napplication/xml\n\n\n\n\n\n\nx-ms-date:Fri, 04 Dec 2026 21:00:00 GMT\n"
                "x-ms-version:2021-02-12\n/acct/link-sync/messages\nvisibilitytimeout:5")
    import hashlib
    import hmac

    digest = hmac.new(b"0123456789abcdef", expected.encode(), hashlib.sha256).digest()
    assert signed == f"SharedKey acct:{base64.b64encode(digest).decode()}"


async def test_a_storage_that_never_answers_fails_the_send_instead_of_parking_it() -> None:
    import asyncio

    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing: a stalled storage

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = RestQueueSender(f"http://127.0.0.1:{port}/devstoreaccount1", "devstoreaccount1",
                             key=base64.b64encode(b"k").decode())
    try:
        # The SDK's retry policy would keep this send for minutes; the webhook must answer Graph in 3 s.
        with pytest.raises(StorageError):
            await asyncio.wait_for(sender.put("link-sync", {"link": "p|r"}), timeout=30)
        assert accepted
    finally:
        await sender.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
