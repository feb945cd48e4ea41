"""The one rule for ids that reach us from outside, and a comparison of secrets that cannot crash.

**Ids.** timum's provider, resource and booking ids end up in table keys (``links`` keys a link as
``provider|resource``, ``leases`` as ``provider|booking|<id>``), in URLs of timum's API and in log
lines. An id that holds ``|`` could address another link's rows; ``..`` or ``/`` could step to
another path of timum's API; a control character could forge a log line or break a table key.
Every HTTP entry point therefore runs each id through ``check_id`` before anything else sees it.

**Graph subscription ids** are GUIDs. The anonymous notification webhook looks up only ids of that
shape: anything else cannot be ours and costs no table read.

**Secrets.** ``hmac.compare_digest`` raises ``TypeError`` for a ``str`` that is not ASCII, so an
anonymous form value such as ``csrf=é`` turned a refusal into a 500. ``secrets_equal`` compares
UTF-8 bytes instead, in constant time, and treats a missing value as a mismatch.

Standard library only: this module is imported by the webhook triggers on every cold start.
"""

from __future__ import annotations

import hmac
import re
import unicodedata

from shared.errors import BadRequest

__all__ = ["MAX_ID_LENGTH", "check_id", "id_problem", "is_subscription_id", "secrets_equal"]

MAX_ID_LENGTH = 128
#: characters an id may never hold: the link-key separator, path separators and the characters
#: Azure Table Storage refuses in PartitionKey / RowKey
_FORBIDDEN = frozenset("|/\\#?")
_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


def _is_control(char: str) -> bool:
    # Cc: C0, DEL and C1 controls; Cf: invisible format characters (bidi overrides, zero-width);
    # Zl/Zp: the Unicode line and paragraph separators some log viewers break lines at.
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")


def id_problem(value: object) -> str | None:
    """Why ``value`` is not an acceptable id, or ``None`` when it is."""
    if not isinstance(value, str) or not value:
        return "is missing"
    if len(value) > MAX_ID_LENGTH:
        return f"is longer than {MAX_ID_LENGTH} characters"
    if value != value.strip():
        return "starts or ends with white space"
    if ".." in value:
        return "contains '..'"
    for char in value:
        if char in _FORBIDDEN:
            return f"contains {char!r}"
        if _is_control(char):
            return "contains a control character"
    return None


def check_id(value: object, field: str) -> str:
    """``value`` if it is an acceptable id, else ``BadRequest`` naming ``field`` (→ 400)."""
    problem = id_problem(value)
    if problem is not None:
        raise BadRequest(f"{field} {problem}", field=field, code="invalid_id")
    assert isinstance(value, str)
    return value


def is_subscription_id(value: object) -> bool:
    """True for a GUID, the only shape of a Microsoft Graph subscription id."""
    return isinstance(value, str) and _GUID.fullmatch(value) is not None


def secrets_equal(expected: str | bytes, given: str | bytes | None) -> bool:
    """Constant-time equality of two secrets of any characters; ``None`` never matches."""
    if given is None:
        return False
    left = expected.encode("utf-8", "surrogatepass") if isinstance(expected, str) else expected
    right = given.encode("utf-8", "surrogatepass") if isinstance(given, str) else given
    return hmac.compare_digest(left, right)
