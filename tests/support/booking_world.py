"""The booking writer's small world (fixture ``world`` in ``tests/bookings/conftest.py``): one
mailbox with a calendar linked to timum resource ``KEY``, the Graph and timum twins, and a booking
delivered the way timum's webhook queue delivers it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from shared.adapters.graph_memory import MemoryGraph, MemoryGraphProvider
from shared.adapters.timum_memory import MemoryTimum
from shared.bookings.payload import booking_to_json
from shared.bookings.service import apply_booking_message
from shared.domain import Booking, BookingStatus, Customer, Link, LinkKey, LinkMode
from shared.repos.links import LinkRepository
from shared.storage import StoragePort
from tests.support.twins import twin_services

START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
KEY = LinkKey("prov-1", "res-1")


class World:
    def __init__(self, storage: StoragePort) -> None:
        self.graph = MemoryGraph(clock=lambda: datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
        self.graph.add_mailbox("anna@praxis.example", display_name="Dr. Anna Weber")
        self.graph.sign_in("anna@praxis.example")
        self.calendar = self.graph.add_calendar("anna@praxis.example", "Behandlungsraum 1")
        self.timum = MemoryTimum()
        self.timum.add_resource(KEY.provider_id, "Behandlungsraum 1", resource_id=KEY.resource_id)
        self.provider = MemoryGraphProvider(self.graph)
        self.services = twin_services(storage=storage, graph=self.graph, provider=self.provider, timum=self.timum,
                                      clock=lambda: datetime(2026, 11, 23, 9, 0, tzinfo=UTC))

    async def link(self) -> Link:
        link = Link(provider_id=KEY.provider_id, resource_id=KEY.resource_id, mode=LinkMode.DELEGATED,
                    tenant_id="tenant-memory", mailbox_id="anna@praxis.example", calendar_id=self.calendar,
                    calendar_name="Behandlungsraum 1", calendar_owner="anna@praxis.example", account_id="acc-anna")
        return await LinkRepository(self.services.storage).save(link)

    def ours(self) -> list[object]:
        return [e for e in self.graph.events.values() if e.booking_id]

    async def send(self, booking: Booking) -> str:
        data = json.loads(json.dumps({"delivery": "d", "type": "booking.updated", "booking": booking_to_json(booking)}))
        return (await apply_booking_message(self.services, data)).result


def booking(version: int = 1, *, minutes: int = 0, status: BookingStatus = BookingStatus.CONFIRMED) -> Booking:
    return Booking(id="bk-1", provider_id=KEY.provider_id, resource_id=KEY.resource_id, version=version,
                   start=START + timedelta(minutes=minutes), end=START + timedelta(minutes=30 + minutes),
                   status=status, service_name="Krankengymnastik 30 min", customer=Customer("Jörg Müller"),
                   updated_at=START - timedelta(days=1, minutes=-version))
