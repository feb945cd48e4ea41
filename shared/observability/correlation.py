"""Correlation ids of the function app.

``with bind(link="p1|r1", invocation=ctx.invocation_id): ...`` puts ids into a ``contextvars``
context (so they follow ``await`` and the tasks created inside). Every log record made inside
carries them as ``record.correlation`` and its message ends with ``" [link=p1|r1 invocation=…]"``
(``shared.observability.redaction`` adds both): the Functions worker forwards only the formatted
message to Application Insights, so ids that live only in record attributes would be lost there.

Import cost stays at the standard library: this module is imported on every cold start.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from types import MappingProxyType

__all__ = ["bind", "current_ids"]

_IDS: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "timum_correlation_ids", default=MappingProxyType({}))


@contextlib.contextmanager
def bind(**ids: object) -> Iterator[Mapping[str, str]]:
    """Add correlation ids for the duration of the block (nested binds merge; ``None``/"" are ignored)."""
    merged = dict(_IDS.get())
    merged.update({key: str(value) for key, value in ids.items() if value is not None and value != ""})
    token = _IDS.set(MappingProxyType(merged))
    try:
        yield merged
    finally:
        _IDS.reset(token)


def current_ids() -> dict[str, str]:
    """The correlation ids bound right now (a copy), e.g. to carry them into a queue message."""
    return dict(_IDS.get())
