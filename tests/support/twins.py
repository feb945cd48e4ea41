"""The one builder of services over the in-memory twins (storage, Graph, timum) and a settable
clock. Each package's world adds its own mailboxes, calendars, resources and links on top."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from shared.adapters.graph_memory import MemoryGraph, MemoryGraphProvider
from shared.adapters.timum_memory import MemoryTimum
from shared.config import Settings
from shared.context import Services
from shared.storage.base import StoragePort
from shared.storage.memory import MemoryStorage
from tests.support.settings import make_settings


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def twin_services(*, storage: StoragePort | None = None, graph: MemoryGraph | None = None,
                  provider: MemoryGraphProvider | None = None, timum: MemoryTimum | None = None,
                  settings: Settings | None = None, clock: Callable[[], datetime] | None = None) -> Services:
    """``Services`` over the twins; anything not given is a fresh, empty twin (the Graph provider
    serves ``graph``; the clock is the system's unless one is given)."""
    graph = graph if graph is not None else MemoryGraph()
    extra = {"clock": clock} if clock is not None else {}
    return Services(settings=settings if settings is not None else make_settings(),
                    storage=storage if storage is not None else MemoryStorage(),
                    timum=timum if timum is not None else MemoryTimum(),
                    graph=provider if provider is not None else MemoryGraphProvider(graph), **extra)
