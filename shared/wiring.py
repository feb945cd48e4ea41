"""Builds the process-wide services from settings: the one place that picks real adapters.

Everything heavy is imported here lazily, on first use, so that ``import function_app``
stays cheap and the notification webhook never loads msgraph-sdk.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from shared.config import Settings, get_settings

if TYPE_CHECKING:
    from shared.context import Services
    from shared.services.notifications import SubscriptionCache
    from shared.storage.base import StoragePort

_storage: StoragePort | None = None
_services: Services | None = None
_cache: SubscriptionCache | None = None
#: (the storage it wraps, the webhook's storage): rebuilt when ``get_storage()`` changes
_webhook_storage: tuple[StoragePort, StoragePort] | None = None
_logging_ready = False


def settings() -> Settings:
    global _logging_ready
    current = get_settings()
    if not _logging_ready:
        _logging_ready = True
        try:
            from shared.observability.redaction import configure_logging
        except ImportError:  # observability is optional for tools that only need storage
            logging.getLogger(__name__).debug("structured logging not configured")
        else:
            configure_logging(current)
    return current


def get_storage() -> StoragePort:
    global _storage
    if _storage is None:
        from shared.storage.azure import AzureStorage

        _storage = AzureStorage.from_settings(settings())
    return _storage


def subscription_cache() -> SubscriptionCache:
    global _cache
    if _cache is None:
        from shared.services.notifications import SubscriptionCache

        _cache = SubscriptionCache()
    return _cache


def get_services() -> Services:
    global _services
    if _services is None:
        from shared.adapters.timum_http import TimumHttpAdapter
        from shared.connect.credentials import RealGraphProvider
        from shared.context import Services

        s = settings()
        storage = get_storage()
        timum = TimumHttpAdapter(s.timum_api_base_url, s.timum_api_key, s.timum_webhook_secrets,
                                 s.timum_status_webhook_url)
        _services = Services(settings=s, storage=storage, timum=timum, graph=RealGraphProvider(s, storage))
    return _services


async def close_clients() -> None:
    """Close the clients cached above, on the loop that used them. The Functions host simply ends
    the worker process; a host that stops in-process and runs on (the local host, tests) calls
    this so that unclosed HTTP sessions do not report themselves during interpreter shutdown."""
    if _services is not None:
        closer = getattr(_services.timum, "close", None)
        if closer is not None:
            await closer()
    if _webhook_storage is not None:
        sender = getattr(_webhook_storage[1], "sender", None)  # the REST enqueue's session
        if sender is not None:
            await sender.close()
    if _storage is not None:
        await _storage.close()


def reset() -> None:
    """Forget cached services (tests that change settings)."""
    global _storage, _services, _cache, _webhook_storage
    _storage = _services = _cache = _webhook_storage = None
    get_settings.cache_clear()


def webhook_storage() -> StoragePort:
    """``get_storage()`` for the Graph webhooks: queue sends as one plain REST call each
    (``shared.storage.queue_rest``) — the hot path of an anonymous endpoint; tables unchanged."""
    global _webhook_storage
    inner = get_storage()
    if _webhook_storage is not None and _webhook_storage[0] is inner:
        return _webhook_storage[1]
    from shared.storage.azure import AzureStorage

    lean = inner
    if isinstance(inner, AzureStorage):
        from shared.storage.queue_rest import rest_queue_storage

        s = settings()

        def credential() -> Any:
            from azure.identity.aio import DefaultAzureCredential

            return DefaultAzureCredential()

        lean = rest_queue_storage(inner, connection_string=s.storage_connection_string,
                                  queue_service_uri=s.queue_service_uri, account_name=s.storage_account_name,
                                  credential=credential)
    _webhook_storage = (inner, lean)
    return lean
