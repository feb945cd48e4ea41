"""Storage port: a small async table and queue interface with two implementations.

* ``azure.py`` — Azure Table Storage and Queue Storage (Azurite locally), the real adapter.
* ``memory.py`` — an in-memory twin with the same semantics (ETags, conflicts, visibility).

``tests/storage/test_contract.py`` runs one contract suite against both. Typed
repositories (``shared/repos/``) are written once, over the port, so every repository
works on both without a second implementation.
"""

from shared.storage.base import Entity, QueuePort, StoragePort, TablePort, decode_key, encode_key

__all__ = ["Entity", "QueuePort", "StoragePort", "TablePort", "decode_key", "encode_key"]
