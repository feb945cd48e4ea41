"""Harnesses for the ``GraphCalendarPort`` contract (fixture ``graph`` in
``tests/contract/conftest.py``): the in-memory twin, and the msgraph-sdk adapter against the Graph
stand-in served over HTTPS in this process.

A harness is the port plus what a test needs to act behind the port's back — the mailbox user
editing Outlook, Graph forgetting delta state, a shared calendar being taken away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from devtools.sandbox.graph.testing import GraphTestEnv, StaticTokenCredential, WebhookReceiver
from shared.adapters.graph_memory import MemoryGraph, Recurrence
from shared.adapters.graph_sdk import GraphSdkAdapter
from shared.domain import EventDraft, SubscriptionInfo
from shared.errors import Throttled
from shared.ports import GraphCalendarPort

#: What a delegated connection asks for (shared calendars included).
DELEGATED_SCOPES = frozenset({"Calendars.ReadWrite", "Calendars.ReadWrite.Shared", "User.Read",
                              "MailboxSettings.Read"})


@dataclass
class GraphHarness:
    port: GraphCalendarPort
    mailbox: str                    # the signed-in user's mailbox id
    mail: str
    display_name: str
    calendar_id: str                # their default calendar
    time_zone: str                  # IANA zone the mailbox is set to
    shared_calendar_id: str         # a colleague's calendar shared with them, editable
    colleague_mail: str
    notification_url: str
    lifecycle_url: str
    #: the user in Outlook: create (subject, start, end, all_day, calendar id or "") → immutable id
    user_creates: Callable[[str, datetime | date, datetime | date, bool, str], str]
    #: weekly series of ``count`` occurrences → the master's id
    user_creates_weekly: Callable[[str, datetime, datetime, int], str]
    user_renames: Callable[[str, str], None]
    user_moves: Callable[[str, datetime, datetime], None]
    user_deletes: Callable[[str], None]
    #: Graph forgets every delta token (410 on their next use)
    lose_delta_state: Callable[[], None]
    #: the shared calendar is no longer visible to the user
    unshare: Callable[[], None]
    #: the notification endpoint answers Graph's validation request wrongly
    break_validation: Callable[[], None]
    #: the next request is throttled with this Retry-After (seconds)
    throttle_next: Callable[[float], None]

    async def subscribe(self, *, client_state: str, expires_at: datetime, calendar_id: str = "",
                        mailbox_wide: bool = False) -> SubscriptionInfo:
        """The port's ``create_subscription`` in the user's mailbox (their default calendar unless
        ``calendar_id``), to the harness's notification and lifecycle endpoints."""
        return await self.port.create_subscription(self.mailbox, calendar_id or self.calendar_id,
                                                   notification_url=self.notification_url,
                                                   lifecycle_url=self.lifecycle_url, client_state=client_state,
                                                   expires_at=expires_at, mailbox_wide=mailbox_wide)


def memory_harness() -> GraphHarness:
    graph = MemoryGraph(seed=7)
    anna = graph.add_mailbox("anna-0001", display_name="Dr. Anna Weber", mail="anna.weber@praxis.example",
                             time_zone="Europe/Berlin")
    jonas = graph.add_mailbox("jonas-0002", display_name="Jonas Becker", mail="jonas.becker@praxis.example",
                              time_zone="Europe/Berlin")
    graph.sign_in(anna)
    shared = graph.default_calendar(jonas)
    graph.share_calendar(shared, anna, can_edit=True)

    def creates(subject: str, start: datetime | date, end: datetime | date, all_day: bool, calendar: str) -> str:
        cal = calendar or graph.default_calendar(anna)
        owner = jonas if cal == shared else anna
        return graph.put_event(owner, cal, subject=subject, start=start, end=end, all_day=all_day)

    def breaks_validation() -> None:
        graph.endpoint_validator = lambda url: False

    def weekly(subject: str, start: datetime, end: datetime, count: int) -> str:
        return graph.put_event(anna, graph.default_calendar(anna), subject=subject, start=start, end=end,
                               recurrence=Recurrence("weekly", count=count))

    return GraphHarness(
        port=graph, mailbox=anna, mail="anna.weber@praxis.example", display_name="Dr. Anna Weber",
        calendar_id=graph.default_calendar(anna), time_zone="Europe/Berlin", shared_calendar_id=shared,
        colleague_mail="jonas.becker@praxis.example",
        notification_url="https://sync.example/api/graph/notify",
        lifecycle_url="https://sync.example/api/graph/lifecycle",
        user_creates=creates, user_creates_weekly=weekly,
        user_renames=lambda event_id, subject: graph.edit_event(event_id, subject=subject),
        user_moves=lambda event_id, start, end: graph.edit_event(event_id, start=start, end=end),
        user_deletes=graph.user_delete, lose_delta_state=graph.lose_state,
        unshare=lambda: graph.remove_calendar(shared),
        break_validation=breaks_validation,
        throttle_next=lambda seconds: graph.fail_next(Throttled("Graph answered 429", retry_after=seconds)),
    )


def sandbox_harness(env: GraphTestEnv, receiver: WebhookReceiver) -> tuple[GraphHarness, GraphSdkAdapter]:
    world = env.world()
    state = env.graph.state
    anna, jonas = world.anna, world.jonas
    shared = state.default_calendar(jonas.id).id
    state.share_calendar(shared, anna.id, can_edit=True, accept=True)
    token = world.token(anna, scopes=DELEGATED_SCOPES)
    adapter = GraphSdkAdapter(StaticTokenCredential(token), base_url=env.base_url, verify=str(env.ca_path))

    def creates(subject: str, start: datetime | date, end: datetime | date, all_day: bool, calendar: str) -> str:
        owner = jonas if calendar == shared else anna
        ids = state.create_event(owner.id, subject, start, end, calendar_id=calendar or None, all_day=all_day)
        return str(ids.immutable_id)

    def weekly(subject: str, start: datetime, end: datetime, count: int) -> str:
        days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
        recurrence: dict[str, Any] = {
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [days[start.weekday()]]},
            "range": {"type": "numbered", "startDate": start.date().isoformat(), "numberOfOccurrences": count},
        }
        return str(state.create_event(anna.id, subject, start, end, recurrence=recurrence).immutable_id)

    def renames(event_id: str, subject: str) -> None:
        state.update_event(event_id, subject=subject)

    def moves(event_id: str, start: datetime, end: datetime) -> None:
        state.move_event(event_id, start, end)

    def loses_state() -> None:
        state.lose_delta_state(anna.id)

    def breaks_validation() -> None:
        receiver.validation = "wrong"

    def throttles(seconds: float) -> None:
        state.add_fault("429", count=1, retry_after=seconds)

    harness = GraphHarness(
        port=adapter, mailbox=anna.id, mail=anna.mail, display_name=anna.display_name,
        calendar_id=state.default_calendar(anna.id).id, time_zone="Europe/Berlin", shared_calendar_id=shared,
        colleague_mail=jonas.mail,
        notification_url=f"{receiver.url}/graph/notify", lifecycle_url=f"{receiver.url}/graph/lifecycle",
        user_creates=creates, user_creates_weekly=weekly,
        user_renames=renames, user_moves=moves, user_deletes=state.delete_event, lose_delta_state=loses_state,
        unshare=lambda: state.unshare_calendar(shared, anna.id),
        break_validation=breaks_validation, throttle_next=throttles,
    )
    return harness, adapter


# --- what the contract tests write through the port -------------------------------------------------

T0 = datetime(2031, 4, 7, 8, 0, tzinfo=UTC)    # a Monday


def draft(booking_id: str, start: datetime = T0, minutes: int = 45, **changes: object) -> EventDraft:
    """An event as the booking writer drafts it, for booking ``booking_id``."""
    values: dict[str, object] = {
        "subject": f"Physiotherapie ({booking_id})", "body_html": "<p>Über timum gebucht</p>",
        "start": start, "end": start + timedelta(minutes=minutes), "time_zone": "Europe/Berlin",
        "show_as": "busy", "categories": ("timum",), "booking_id": booking_id,
    }
    values.update(changes)
    return EventDraft(**values)  # type: ignore[arg-type]
