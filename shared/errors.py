"""The one exception tree of the service.

Every adapter wraps what its library raises into one of these classes
(``raise ... from exc``), so that the trigger layer can map each class to exactly
one behaviour without knowing which SDK failed::

    SyncError                         base; never raised itself
    ├── ConfigError                   a setting is missing or malformed (startup)
    ├── BadRequest                    caller input is invalid → 400, nothing changed
    │   ├── InvalidSignature          signed link / webhook does not verify → 401 / error page
    │   └── PayloadTooLarge           body above the limit → 413
    ├── NotFound                      the addressed thing does not exist → 404
    ├── Conflict                      optimistic concurrency lost (ETag) or rule broken → 409 / retry
    ├── TransientError                try again later (network, 5xx, timeouts)
    │   └── Throttled                 429 / 503 with Retry-After → re-queue with that delay
    ├── AuthError                     the remote refused our credentials
    │   ├── NeedsReconnect            refresh token revoked/expired (invalid_grant) → user must reconnect
    │   └── ConsentRequired           tenant requires admin consent (AADSTS65001/90094, consent_required)
    ├── RemoteGone                    the calendar / subscription / resource is gone (404 / 410 remote)
    │   └── SyncStateExpired          delta token no longer valid (410 / syncStateNotFound) → full resync
    └── StorageError                  Table / Queue storage failed → 5xx so the caller retries

Messages never contain tokens, secrets or signed links: they end up in logs and
link status rows.
"""

from __future__ import annotations


class SyncError(Exception):
    """Base of every error this service raises on purpose."""

    #: short machine-readable code, stored in link status and returned in JSON errors
    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class ConfigError(SyncError):
    code = "config"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"Configuration is incomplete or invalid:\n{lines}")


class BadRequest(SyncError):
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.field = field


class InvalidSignature(BadRequest):
    code = "invalid_signature"


class PayloadTooLarge(BadRequest):
    code = "payload_too_large"


class NotFound(SyncError):
    code = "not_found"


class Conflict(SyncError):
    code = "conflict"


class TransientError(SyncError):
    code = "transient"

    def __init__(self, message: str, *, retry_after: float | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class Throttled(TransientError):
    code = "throttled"


class AuthError(SyncError):
    code = "auth"


class NeedsReconnect(AuthError):
    code = "needs_reconnect"


class ConsentRequired(AuthError):
    code = "consent_required"

    def __init__(self, message: str, *, tenant_id: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.tenant_id = tenant_id


class RemoteGone(SyncError):
    code = "remote_gone"


class SyncStateExpired(RemoteGone):
    code = "sync_state_expired"


class StorageError(SyncError):
    code = "storage"
