"""Fault-injection soak over the whole local stack (``run_soak``); ``python -m bench.soak [--steps N]
[--seed S]`` runs and reports it, ``tests/soak`` a short one.

A seeded plan of random steps runs against the real app on the local host, Azurite and the
sandbox, while the sandbox injects 429 / 503 / timeouts into a share of Graph and timum calls:

* Outlook: events created (busy, tentative, out of office, free; some all-day, some weekly
  series), moved, deleted, switched between busy and free;
* timum: bookings made, moved and cancelled on linked resources;
* duplicate, delayed and reordered deliveries: Graph notifications replayed to the webhook long
  after the change, booking webhooks resent, held back and released newest first;
* a restart of the worker: the host stops and a fresh one starts on the same port, with the app's
  per-process caches gone; webhooks that arrive meanwhile fail and are retried by their senders
  (see ``restart_host``; ``--abrupt-crashes`` cuts running invocations off instead);
* token revocation of the delegated link's account, followed later by a reconnect through the
  connect flow; a subscription removed by Graph (``subscriptionRemoved``), ``missed``
  notifications; delta state lost by Graph (410 on the next round).
* the app-only links' organisation: its administrator withdraws the application permissions or
  narrows the app's mailbox scope (RBAC for Applications), and later connects the organisation
  again (``org_steps``: they replace some pauses, so the rest of a seed's plan is unchanged).

The link watch (stale / fresh, conflict / resolved notices) runs every ``WATCH_EVERY`` steps, with
the provider's stale threshold at one minute so that the revoked link's outage makes it stale.

Then, at quiescence — faults off, held deliveries released, queues empty, nothing running, and
a final resync of every link through timum's links API — it checks: the blocked slots of each
resource are exactly the blocking Outlook events in the sync window (by id, with their times),
the Outlook events we wrote are exactly the confirmed bookings (one each, at the booking's
times), nothing is left in a queue, and every message that went to a poison queue is listed;
after a last watch: the conflicts timum was told about are exactly the blocking events that
overlap upcoming confirmed bookings, each told once per opening, and no resource is left stale.

The plan is a pure function of the seed and the sizes (``make_plan``); timing inside the stack
is not, so two runs of one seed make the same changes but may interleave them differently.

Why restarts are graceful by default: a host that dies (``kill -9``, or an abrupt stop that cuts
off the host's own bookkeeping) leaves the messages it had fetched invisible for the queue
trigger's fetch lease — 10 minutes, as in Azure. That is correct, eventually consistent
behaviour, but a soak with a hundred crashes cannot wait it out each time. The crash windows
inside one invocation (a write done, its record not yet) are covered by the engine's crash tests
on the twins; ``--abrupt-crashes`` runs this soak with them and waits for the fetch leases.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from devtools.stack import ROOT
from devtools.stack_world import APP_QUEUES, add_tenant, queue_depths, wait_quiet

if TYPE_CHECKING:
    from devtools.sandbox.directory import SandboxUser
    from devtools.stack import Stack
    from shared.domain import LinkKey

#: (kind, weight) of the plan's steps
WEIGHTS: tuple[tuple[str, float], ...] = (
    ("ol_create", 22), ("ol_move", 12), ("ol_delete", 7), ("ol_showas", 5),
    ("bk_create", 12), ("bk_move", 7), ("bk_cancel", 5),
    ("replay_notification", 5), ("replay_booking", 3), ("hold_bookings", 1.5), ("release_bookings", 2),
    ("pause", 8), ("crash", 1.2), ("revoke", 0.4), ("reconnect", 1.0), ("subscription_removed", 0.5),
    ("missed", 0.4), ("delta_lost", 0.6),
)
#: organisation steps (``org_steps``): they take the place of some pauses, so adding them leaves
#: every other step of a seed's plan as it was
ORG_KINDS = ("consent_withdraw", "admin_consent", "scope_change")
#: every second pause becomes an organisation step
ORG_EVERY = 2
MAX_EVENTS_PER_LINK = 25
#: steps of the soak inside ``python -m bench`` (its 20-minute budget); the soak's own CLI runs 10,000
BENCH_STEPS = 800
MAX_BOOKINGS_PER_LINK = 15
#: steps between two runs of the link watch timer (fired through the host's admin API)
WATCH_EVERY = 50
SHOW_AS = ("busy", "busy", "busy", "tentative", "oof", "free")


@dataclass(frozen=True)
class Step:
    n: int
    kind: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "kind": self.kind, **self.args}


@dataclass
class SoakConfig:
    steps: int = 10_000
    seed: int = 1
    #: app-only push links, plus one delegated link (token revocation needs a signed-in account)
    app_links: int = 3
    delegated: bool = True
    fault_rate: float = 0.10
    #: seconds between steps (the stack works while the plan waits)
    pace: float = 0.01
    #: what a stopping host gives running invocations: long enough to finish (a restart), or a
    #: fraction of a second (a crash that cuts them off; see the module docstring)
    crash_grace: float = 30.0
    quiet_timeout: float = 900.0


@dataclass
class _Planned:
    """What the plan has made so far, so that every step acts on something that exists."""

    links: int
    delegated: bool
    events: list[list[tuple[int, bool]]] = field(default_factory=list)  # (event no, is series) per link
    bookings: list[list[int]] = field(default_factory=list)
    next_event: int = 0
    next_booking: int = 0
    held: bool = False
    revoked: bool = False

    def __post_init__(self) -> None:
        self.events = [[] for _ in range(self.links)]
        self.bookings = [[] for _ in range(self.links)]

    def feasible(self, kind: str, link: int) -> str:
        """``kind``, or the step to take instead where it has nothing to act on (rules apply in turn)."""
        for kinds, applies, instead in _FALLBACKS:
            if kind in kinds and applies(self, link):
                kind = instead
        return kind

    def ol_create(self, rng: random.Random, link: int, day: int, slot: int) -> dict[str, Any]:
        series = rng.random() < 0.08
        args = {"event": self.next_event, "day": day, "slot": slot, "show_as": rng.choice(SHOW_AS),
                "all_day": not series and rng.random() < 0.1, "series": series}
        self.events[link].append((self.next_event, series))
        self.next_event += 1
        return args

    def ol_move(self, rng: random.Random, link: int, day: int, slot: int) -> dict[str, Any]:
        singles = [e for e, series in self.events[link] if not series]
        return {"event": rng.choice(singles), "day": day, "slot": slot}

    def ol_delete(self, rng: random.Random, link: int, day: int, slot: int) -> dict[str, Any]:
        chosen = rng.randrange(len(self.events[link]))
        return {"event": self.events[link].pop(chosen)[0]}

    def ol_showas(self, rng: random.Random, link: int, day: int, slot: int) -> dict[str, Any]:
        return {"event": rng.choice(self.events[link])[0], "show_as": rng.choice(SHOW_AS)}

    def bk_create(self, rng: random.Random, link: int, day: int, slot: int) -> dict[str, Any]:
        self.bookings[link].append(self.next_booking)
        self.next_booking += 1
        return {"booking": self.next_booking - 1, "day": day, "slot": slot}

    def bk_move(self, rng: random.Random, link: int, day: int, slot: int) -> dict[str, Any]:
        return {"booking": rng.choice(self.bookings[link]), "day": day, "slot": slot}

    def bk_cancel(self, rng: random.Random, link: int, day: int, slot: int) -> dict[str, Any]:
        return {"booking": self.bookings[link].pop(rng.randrange(len(self.bookings[link])))}

    def replay_booking(self, rng: random.Random, link: int, day: int, slot: int) -> dict[str, Any]:
        return {"pick": rng.random()}

    def pause(self, rng: random.Random, link: int, day: int, slot: int) -> dict[str, Any]:
        return {"seconds": round(rng.uniform(0.05, 0.5), 2)}



#: (kinds, when it has nothing to act on, the step taken instead), in the order they are tried
_FALLBACKS: tuple[tuple[frozenset[str], Callable[[_Planned, int], bool], str], ...] = (
    (frozenset({"ol_create"}), lambda p, link: len(p.events[link]) >= MAX_EVENTS_PER_LINK, "ol_delete"),
    (frozenset({"bk_create"}), lambda p, link: len(p.bookings[link]) >= MAX_BOOKINGS_PER_LINK, "bk_cancel"),
    (frozenset({"ol_move", "ol_delete", "ol_showas"}), lambda p, link: not p.events[link], "ol_create"),
    (frozenset({"bk_move", "bk_cancel"}), lambda p, link: not p.bookings[link], "bk_create"),
    (frozenset({"ol_move"}), lambda p, link: all(series for _, series in p.events[link]), "ol_showas"),
    (frozenset({"revoke", "reconnect"}), lambda p, link: not p.delegated, "pause"),
    (frozenset({"reconnect"}), lambda p, link: not p.revoked, "pause"),
    (frozenset({"revoke"}), lambda p, link: p.revoked, "pause"),
    (frozenset({"release_bookings"}), lambda p, link: not p.held, "pause"),
    (frozenset({"hold_bookings"}), lambda p, link: p.held, "pause"),
)

#: the kinds whose step carries more than its link, or changes the events and bookings the plan holds
_PLANNERS: dict[str, Callable[[_Planned, random.Random, int, int, int], dict[str, Any]]] = {
    kind: getattr(_Planned, kind)
    for kind in ("ol_create", "ol_move", "ol_delete", "ol_showas", "bk_create", "bk_move", "bk_cancel",
                 "replay_booking", "pause")
}
#: the kinds that only switch a state of the stack on or off: kind → (the flag of ``_Planned``, its new value)
_SWITCHES: dict[str, tuple[str, bool]] = {
    "hold_bookings": ("held", True), "release_bookings": ("held", False),
    "revoke": ("revoked", True), "reconnect": ("revoked", False),
}


def make_plan(seed: int, steps: int, links: int, *, delegated: bool = True) -> list[Step]:
    """The soak's steps for ``seed``: the same seed and sizes give the same list."""
    rng = random.Random(seed)
    kinds = [k for k, _ in WEIGHTS]
    weights = [w for _, w in WEIGHTS]
    planned = _Planned(links, delegated)
    plan: list[Step] = []
    for n in range(steps):
        kind = rng.choices(kinds, weights)[0]
        link = rng.randrange(links)
        day, slot = rng.randrange(1, 29), rng.randrange(0, 20)
        kind = planned.feasible(kind, link)
        args: dict[str, Any] = {"link": link}
        planner = _PLANNERS.get(kind)
        if planner is not None:
            args.update(planner(planned, rng, link, day, slot))
        if kind in _SWITCHES:
            setattr(planned, *_SWITCHES[kind])
        plan.append(Step(n, kind, args))
    return org_steps(plan, seed, links)


def org_steps(plan: list[Step], seed: int, links: int) -> list[Step]:
    """Turn every ``ORG_EVERY``-th pause into a step of the organisation's administrator:
    withdraw the app's application permissions, or narrow its mailbox scope (RBAC for
    Applications) to leave one mailbox out — each later undone by ``admin_consent`` (the
    administrator connects the organisation again, with the full scope)."""
    rng = random.Random(seed * 7919 + 17)
    broken = False
    pauses = 0
    out: list[Step] = []
    cycle = 0
    for step in plan:
        if step.kind != "pause":
            out.append(step)
            continue
        pauses += 1
        if pauses % ORG_EVERY:
            out.append(step)
            continue
        if broken:
            out.append(Step(step.n, "admin_consent", {"link": step.args.get("link", 0)}))
            broken = False
        else:
            kind = ("consent_withdraw", "scope_change")[cycle % 2]
            cycle += 1
            out.append(Step(step.n, kind, {"link": rng.randrange(links)}))
            broken = True
    return out


@dataclass
class SoakLink:
    key: LinkKey
    user: SandboxUser
    calendar_id: str
    delegated: bool = False


@dataclass
class SoakReport:
    seed: int
    steps: int
    seconds: float = 0.0
    quiesce_seconds: float = 0.0
    step_counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    crashes: int = 0
    #: connect-flow attempts that failed before a reconnect went through (the user tried again)
    reconnect_retries: int = 0
    #: reconnects that went through only once the faults were lifted
    reconnects_without_faults: int = 0
    graph_faults: int = 0
    timum_faults: int = 0
    invocations: dict[str, int] = field(default_factory=dict)
    poison: list[str] = field(default_factory=list)
    expected_slots: int = 0
    actual_slots: int = 0
    active_bookings: int = 0
    booking_events: int = 0
    expected_conflicts: int = 0
    open_conflicts: int = 0
    stale_notices: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [f"soak seed {self.seed}: {self.steps} steps in {self.seconds:.0f} s, quiescence "
               f"{self.quiesce_seconds:.0f} s",
               f"  steps: {dict(sorted(self.step_counts.items()))}",
               f"  skipped (nothing to act on at that moment): {self.skipped or 'none'}",
               f"  restarts {self.crashes}, reconnect retries {self.reconnect_retries} (through only without "
               f"faults: {self.reconnects_without_faults}), injected faults: Graph {self.graph_faults}, timum "
               f"{self.timum_faults}",
               f"  invocations: {dict(sorted(self.invocations.items()))}",
               f"  poison messages consumed: {len(self.poison)}" + (f" {self.poison}" if self.poison else ""),
               f"  blocked slots: expected {self.expected_slots}, found {self.actual_slots}",
               f"  bookings: confirmed {self.active_bookings}, Outlook events {self.booking_events}",
               f"  conflicts: expected {self.expected_conflicts}, told and open {self.open_conflicts}; "
               f"stale notices {self.stale_notices}",
               f"  problems: {len(self.problems)}"]
        out += [f"    - {p}" for p in self.problems[:50]]
        return out


class Soak:
    """Runs a plan against a stack and checks the end state."""

    def __init__(self, stack: Stack, config: SoakConfig, log: Callable[[str], None] = print) -> None:
        self.stack = stack
        self.config = config
        self.log = log
        self.links: list[SoakLink] = []
        self.events: dict[int, str] = {}          # plan event no → sandbox id (immutable)
        self.bookings: dict[int, str] = {}        # plan booking no → timum booking id
        self.report = SoakReport(config.seed, config.steps)
        self.revoked = False
        self.held = False
        #: the organisation's grant is withdrawn or its scope narrowed (``organisation``)
        self.org_broken = False
        #: invocation records of hosts that were restarted since the steps began
        self._records: list[Any] = []
        self._counting = False

    # --- set-up --------------------------------------------------------------------------------
    def setup(self) -> None:
        stack = self.stack
        _, people = add_tenant(stack, "Soak Praxis", self.config.app_links)
        for i, person in enumerate(people):
            linked = stack.link_app_only(person.mail, f"Behandlungsraum {i}", "soak", f"raum-{i}", timeout=120)
            self.links.append(SoakLink(linked.link.key, person, linked.calendar_id))
        if self.config.delegated:
            _, (person,) = add_tenant(stack, "Soak Einzelpraxis", 1, admin_consent=False)
            linked = stack.link_delegated(person.mail, "Sprechzimmer", "soak", "zimmer-1", timeout=120)
            self.links.append(SoakLink(linked.link.key, person, linked.calendar_id, delegated=True))
        self.stale_after_one_minute()
        wait_quiet(stack, timeout=120)
        # From here on the host stops with the configured grace (see ``restart_host``).
        self.restart()

    def restart(self) -> None:
        if self._counting:
            self._records += self.stack.host.records()
        restart_host(self.stack, grace=self.config.crash_grace)

    def faults(self, on: bool) -> None:
        graph, timum = self.stack.graph, self.stack.timum
        if not on:
            self.report.graph_faults += sum(rule.hits for rule in graph.faults)
            self.report.timum_faults += sum(rule.hits for rule in timum.faults)
            graph.clear_faults()
            timum.clear_faults()
            return
        share = self.config.fault_rate / 3
        graph.add_fault("429", rate=share, retry_after=0.2)
        graph.add_fault("503", rate=share, retry_after=0.2)
        graph.add_fault("timeout", rate=share, delay=0.5)
        timum.seed_random(self.config.seed)
        timum.inject_fault(429, rate=share, retry_after=0.2)
        timum.inject_fault(503, rate=share)
        timum.inject_fault(504, rate=share, delay=0.5)

    # --- steps ---------------------------------------------------------------------------------
    def run(self) -> SoakReport:
        plan = make_plan(self.config.seed, self.config.steps, len(self.links), delegated=self.config.delegated)
        began = time.monotonic()
        self._counting = True
        self.faults(True)
        counts: Counter[str] = Counter()
        skipped: Counter[str] = Counter()
        last_report = time.monotonic()
        try:
            for step in plan:
                counts[step.kind] += 1
                if not self.do(step):
                    skipped[step.kind] += 1
                time.sleep(self.config.pace)
                if (step.n + 1) % WATCH_EVERY == 0:
                    self.watch()
                if time.monotonic() - last_report > 30:
                    last_report = time.monotonic()
                    self.log(f"step {step.n + 1}/{len(plan)}, queues {queue_depths(self.stack)}")
        finally:
            self.faults(False)
        self.report.seconds = time.monotonic() - began
        self.report.step_counts = dict(counts)
        self.report.skipped = dict(skipped)
        begun = time.monotonic()
        self.quiesce()
        self.report.quiesce_seconds = time.monotonic() - begun
        self.check()
        return self.report

    def _times(self, day: int, slot: int) -> tuple[datetime, datetime]:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today + timedelta(days=day, hours=6, minutes=30 * slot)
        return start, start + timedelta(minutes=30)

    def do(self, step: Step) -> bool:
        """Perform one step; False if it found nothing to act on (e.g. no live subscription)."""
        from devtools.sandbox.timum.state import SandboxError

        action = _ACTIONS.get(step.kind)
        if action is None:  # pragma: no cover - make_plan emits only the kinds of _ACTIONS
            raise ValueError(f"unknown step {step.kind}")
        link = self.links[step.args.get("link", 0) % len(self.links)]
        try:
            return action(self, link, step.args) is not False
        except (KeyError, ValueError, SandboxError):
            # The sandbox refused (an event already gone, say): count it as skipped and go on.
            return False

    # Each step's action returns False when it found nothing to act on, None when it acted.
    def _ol_create(self, link: SoakLink, a: dict[str, Any]) -> None:
        graph = self.stack.graph
        start, end = self._times(a["day"], a["slot"])
        if a["all_day"]:
            ids = graph.create_event(link.user.id, f"Ganztägig {a['event']}", start.date(),
                                     start.date() + timedelta(days=1), calendar_id=link.calendar_id,
                                     all_day=True, show_as=a["show_as"])
        else:
            extra: dict[str, Any] = {}
            if a["series"]:
                extra["recurrence"] = {
                    "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [start.strftime("%A").lower()]},
                    "range": {"type": "numbered", "startDate": start.date().isoformat(),
                              "numberOfOccurrences": 3}}
            ids = graph.create_event(link.user.id, f"Termin {a['event']}", start, end,
                                     calendar_id=link.calendar_id, show_as=a["show_as"], **extra)
        self.events[a["event"]] = ids.immutable_id

    def _ol_move(self, link: SoakLink, a: dict[str, Any]) -> None:
        graph = self.stack.graph
        event = graph.event(self.events[a["event"]])
        start, end = self._times(a["day"], a["slot"])
        if event.is_all_day:
            graph.move_event(self.events[a["event"]], start.date(), start.date() + timedelta(days=1))
        else:
            graph.move_event(self.events[a["event"]], start, end)

    def _ol_delete(self, link: SoakLink, a: dict[str, Any]) -> None:
        self.stack.graph.delete_event(self.events.pop(a["event"]))

    def _ol_showas(self, link: SoakLink, a: dict[str, Any]) -> None:
        self.stack.graph.update_event(self.events[a["event"]], show_as=a["show_as"])

    def _bk_create(self, link: SoakLink, a: dict[str, Any]) -> None:
        start, _ = self._times(a["day"], a["slot"])
        booking = self.stack.timum.make_booking(link.key.provider_id, link.key.resource_id, start,
                                                duration=timedelta(minutes=30), force=True)
        self.bookings[a["booking"]] = booking.id

    def _bk_move(self, link: SoakLink, a: dict[str, Any]) -> None:
        start, _ = self._times(a["day"], a["slot"])
        self.stack.timum.reschedule_booking(self.bookings[a["booking"]], start, force=True)

    def _bk_cancel(self, link: SoakLink, a: dict[str, Any]) -> None:
        self.stack.timum.cancel_booking(self.bookings.pop(a["booking"]))

    def _replay_notification(self, link: SoakLink, a: dict[str, Any]) -> bool:
        return self.replay_notification(link)

    def _replay_booking(self, link: SoakLink, a: dict[str, Any]) -> bool | None:
        timum = self.stack.timum
        deliveries = timum.list_deliveries()
        if not deliveries:
            return False
        timum.resend_delivery(deliveries[int(a["pick"] * len(deliveries))].seq)
        return None

    def _hold_bookings(self, link: SoakLink, a: dict[str, Any]) -> None:
        self.stack.timum.pause_deliveries()
        self.held = True

    def _release_bookings(self, link: SoakLink, a: dict[str, Any]) -> None:
        self.stack.timum.resume_deliveries(reverse=True)
        self.held = False

    def _pause(self, link: SoakLink, a: dict[str, Any]) -> None:
        time.sleep(a["seconds"])

    def _crash(self, link: SoakLink, a: dict[str, Any]) -> None:
        self.restart()
        self.report.crashes += 1

    def _revoke(self, link: SoakLink, a: dict[str, Any]) -> None:
        identity = self.stack.sandbox.identity
        delegated = next(lk for lk in self.links if lk.delegated)
        identity.revoke_refresh_tokens(delegated.user.id, reason="revoked")
        identity.expire_access_tokens(delegated.user.id)
        self.revoked = True

    def _reconnect(self, link: SoakLink, a: dict[str, Any]) -> None:
        self.reconnect()

    def _lifecycle(self, link: SoakLink, event: str) -> bool | None:
        graph = self.stack.graph
        subs = [s for s in graph.list_subscriptions() if s.calendar_id == link.calendar_id]
        if not subs:
            return False
        graph.trigger_lifecycle(subs[-1].id, event)
        return None

    def _subscription_removed(self, link: SoakLink, a: dict[str, Any]) -> bool | None:
        return self._lifecycle(link, "subscriptionRemoved")

    def _missed(self, link: SoakLink, a: dict[str, Any]) -> bool | None:
        return self._lifecycle(link, "missed")

    def _delta_lost(self, link: SoakLink, a: dict[str, Any]) -> None:
        self.stack.graph.lose_delta_state(link.user.id)

    def _consent_withdraw(self, link: SoakLink, a: dict[str, Any]) -> bool:
        return self.organisation("consent_withdraw", link)

    def _scope_change(self, link: SoakLink, a: dict[str, Any]) -> bool:
        return self.organisation("scope_change", link)

    def _admin_consent(self, link: SoakLink, a: dict[str, Any]) -> bool:
        return self.organisation("admin_consent", link)

    def organisation(self, kind: str, link: SoakLink) -> bool:
        """The app-only links' tenant: its administrator withdraws the application permissions,
        narrows the app's mailbox scope, or connects the organisation again (proven with a fresh
        app-only token, then recorded as the consent callback does)."""
        app_links = [lk for lk in self.links if not lk.delegated]
        if not app_links:
            return False
        identity = self.stack.sandbox.identity
        tenant = app_links[0].user.tenant_id
        if kind == "consent_withdraw":
            identity.set_application_consent(tenant, None)
            self.org_broken = True
        elif kind == "scope_change":
            left_out = link if not link.delegated else app_links[0]
            identity.set_app_mailbox_scope(tenant, [lk.user.id for lk in app_links if lk is not left_out])
            self.org_broken = True
        else:
            self.restore_organisation()
        return True

    def restore_organisation(self) -> None:
        from shared.org.service import app_only_grant, connect_tenant

        app_links = [lk for lk in self.links if not lk.delegated]
        tenant = app_links[0].user.tenant_id
        identity = self.stack.sandbox.identity
        identity.set_app_mailbox_scope(tenant, None)
        identity.set_admin_consent(tenant, True)
        services = self.stack.services()

        async def reconnect() -> None:
            for attempt in range(5):
                try:
                    tid, roles = await app_only_grant(services, tenant)
                    break
                except Exception:  # injected identity faults: the admin tries again
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.5)
            await connect_tenant(services, tid, app_links[0].key.provider_id, roles)

        self.stack.run(reconnect(), timeout=120)
        self.org_broken = False

    def replay_notification(self, link: SoakLink) -> bool:
        """POST a notification Graph already sent (or could have), long after the change."""
        import httpx

        subs = [s for s in self.stack.graph.list_subscriptions() if s.calendar_id == link.calendar_id]
        if not subs:
            return False
        sub = subs[-1]
        event = next(iter(self.events.values()), "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A")
        body = {"value": [{"subscriptionId": sub.id, "clientState": sub.client_state, "changeType": "updated",
                           "resource": f"Users/{sub.mailbox_id}/Events/{event}", "tenantId": sub.tenant_id,
                           "subscriptionExpirationDateTime": sub.expiration.isoformat()}]}
        try:
            with httpx.Client(timeout=10.0) as client:
                client.post(self.stack.api_url("graph/notifications"), json=body)
        except httpx.HTTPError:
            return False  # the host is restarting: Graph would retry, the replay is simply lost
        return True

    def reconnect(self) -> None:
        """The user connects again. The chooser tries a transient Graph or timum failure again by
        itself, but under injected faults a connect page may still answer "try again later"
        (503); the user then tries again. After three failed tries the soak lifts the faults for
        the next ones — it checks the sync, not how often a user must retry — and counts that."""
        delegated = next(lk for lk in self.links if lk.delegated)
        # A booking timum took while the link waited, whose webhook never came: only the backfill
        # of the reconnect (listBookings) can bring it to Outlook; ``check_bookings`` looks for it.
        start, _ = self._times(len(self.bookings) % 7, 9)
        made = self.stack.timum.make_booking(delegated.key.provider_id, delegated.key.resource_id, start,
                                             duration=timedelta(minutes=30), force=True, emit=False)
        self.bookings[f"backfill-{made.id}"] = made.id
        last: Exception | None = None
        faulty = bool(self.stack.graph.faults or self.stack.timum.faults)
        for attempt in range(6):
            lifted = attempt >= 3 and faulty
            if lifted:
                self.faults(False)
            try:
                self.stack.link_delegated(delegated.user.mail, "Sprechzimmer", delegated.key.provider_id,
                                          delegated.key.resource_id, timeout=120)
                self.revoked = False
                self.report.reconnect_retries += attempt
                self.report.reconnects_without_faults += int(lifted)
                return
            except Exception as exc:  # the user sees an error page and tries again
                last = exc
                time.sleep(1.0)
            finally:
                if lifted:
                    self.faults(True)
        raise RuntimeError(f"reconnecting the delegated link failed six times, three without faults: {last}")

    # --- quiescence and the checks ---------------------------------------------------------------
    def quiesce(self) -> None:
        stack = self.stack
        stack.graph.release_held()
        if self.held:
            stack.timum.resume_deliveries(reverse=True)
            self.held = False
        if self.revoked:
            self.reconnect()
        if self.org_broken:
            self.restore_organisation()
        wait_quiet(stack, timeout=self.config.quiet_timeout, settle=2.0, log=self.log)
        self.resync_all()
        wait_quiet(stack, timeout=self.config.quiet_timeout, settle=2.0, log=self.log)

    def resync_all(self) -> None:
        """A full resync of every link through timum's links API, as timum's button would ask."""
        import httpx

        from shared.connect.links_api import sign_api_request

        with httpx.Client(timeout=30.0) as client:
            for link in self.links:
                path = f"/api/providers/{link.key.provider_id}/links/{link.key.resource_id}/resync"
                headers = sign_api_request("POST", path, link.key.provider_id, b"",
                                           self.stack.settings.timum_webhook_secrets, timestamp=int(time.time()))
                headers["x-functions-key"] = self.stack.env["FUNCTION_KEY"]
                response = client.post(self.stack.base_url + path, headers=headers, content=b"")
                if response.status_code != 202:
                    self.report.problems.append(f"resync of {link.key} answered {response.status_code}")

    # --- booking safety: the link watch -----------------------------------------------------------
    def stale_after_one_minute(self) -> None:
        from shared.domain import ProviderSettings
        from shared.repos.links import ProviderSettingsRepository

        repo = ProviderSettingsRepository(self.stack.storage)

        async def save() -> None:
            current = await repo.get("soak")
            await repo.save(ProviderSettings(**{**current.__dict__, "stale_after_minutes": 1}))

        self.stack.run(save())

    def watch(self, *, wait: bool = False) -> None:
        """Run the link watch now (its timer's 5 minutes are longer than a soak's phases).
        ``wait``: until this sweep has finished — the host runs a fired function in the
        background, and waiting for rest does not wait for timers."""
        done_before = len(self.stack.host.records("watch_links"))
        try:
            response = self.stack.fire("watch_links")
        except Exception as exc:  # the host may be restarting; the next watch runs
            self.log(f"link watch not fired: {type(exc).__name__}")
            return
        if response.status_code >= 300:
            self.log(f"link watch answered {response.status_code}")
        elif wait:
            self.stack.wait_for(lambda: len(self.stack.host.records("watch_links")) > done_before,
                                timeout=120, what="the link watch's sweep")

    def check_notices(self) -> None:
        """Conflict notices equal the overlaps of blocking events and upcoming confirmed bookings; a
        conflict is told once per opening; no resource stays stale."""
        report, stack = self.report, self.stack
        # The sweep, not just its firing: read too early, timum would not have heard the notices
        # the sweep is still sending (a conflict first seen now, after the held bookings came in).
        self.watch(wait=True)
        wait_quiet(stack, timeout=120, settle=1.0)
        now = datetime.now(UTC)
        received = [r for r in stack.timum.list_received_statuses() if r.provider_id == "soak" and not r.duplicate]
        for link in self.links:
            resource = stack.timum.resource(link.key.provider_id, link.key.resource_id)
            if resource.stale:
                report.problems.append(f"{link.key}: still stale after quiescence")
            confirmed = [b for b in stack.timum.list_bookings(link.key.provider_id, link.key.resource_id)
                         if b.status == "confirmed" and b.end.astimezone(UTC) > now]
            expected = sorted((b.id, start, end) for (start, end, _, _) in self.expected_slots(link).values()
                              for b in confirmed
                              if b.start.astimezone(UTC) < end and b.end.astimezone(UTC) > start)
            told = sorted((c["bookingId"], datetime.fromisoformat(c["start"].replace("Z", "+00:00")),
                           datetime.fromisoformat(c["end"].replace("Z", "+00:00")))
                          for c in resource.conflicts.values())
            report.expected_conflicts += len(expected)
            report.open_conflicts += len(told)
            if told != expected:
                report.problems.append(f"{link.key}: conflicts told {len(told)}, expected {len(expected)} "
                                       f"(missing {sorted(set(expected) - set(told))[:3]}, "
                                       f"extra {sorted(set(told) - set(expected))[:3]})")
            kinds: dict[str, list[str]] = {}
            for r in received:
                data = r.payload["data"]
                if r.resource_id == link.key.resource_id and data.get("kind") in ("conflict", "resolved"):
                    kinds.setdefault(str(data.get("conflictId")), []).append(str(data["kind"]))
            for cid, sequence in kinds.items():
                if any(a == b for a, b in zip(sequence, sequence[1:], strict=False)):
                    report.problems.append(f"{link.key}: conflict {cid} told {sequence}, not alternating")
            report.stale_notices += sum(1 for r in received if r.resource_id == link.key.resource_id
                                        and r.payload["data"].get("kind") == "stale")

    def check(self) -> None:
        report, stack = self.report, self.stack
        depths = queue_depths(stack, [*APP_QUEUES, *(f"{q}-poison" for q in APP_QUEUES)])
        for queue, depth in depths.items():
            if depth:
                report.problems.append(f"{depth} message(s) left in {queue}")
        records = [*self._records, *stack.host.records()]
        report.invocations = dict(Counter(f"{r.function}:{r.outcome}" for r in records))
        report.poison = [f"{r.function} ({r.outcome})" for r in records if r.function.endswith("_poison")]
        for link in self.links:
            self.check_slots(link)
            self.check_bookings(link)
            stored = stack.link(link.key.provider_id, link.key.resource_id)
            if stored is None:
                report.problems.append(f"{link.key}: the link is gone")
            elif stored.health.value != "ok":
                report.problems.append(f"{link.key}: health {stored.health.value} ({stored.last_error})")
        self.check_notices()

    def expected_slots(self, link: SoakLink) -> dict[str, tuple[datetime, datetime, str, str]]:
        """external id → (start, end, event id, what it is) of every Outlook instance in the window
        that must block."""
        from shared.core.window import sync_window
        from shared.domain import slot_external_id

        settings = self.stack.settings
        window = sync_window(datetime.now(UTC), past_days=settings.sync_window_past_days,
                             future_days=settings.sync_window_future_days)
        graph = self.stack.graph
        out: dict[str, tuple[datetime, datetime, str, str]] = {}
        for inst in graph.view(link.calendar_id, window.start, window.end):
            ev = inst.event
            show_as = str(inst.data.get("show_as", "busy")).lower()
            own = ev.transaction_id is not None and ev.transaction_id.startswith("timum-") or bool(ev.ext_props)
            if (inst.type == "seriesMaster" or own or inst.data.get("is_cancelled")
                    or show_as in ("free", "workingelsewhere") or inst.end_utc <= inst.start_utc):
                continue
            event_id = graph.ids(ev, inst.occurrence).immutable_id
            what = f"{inst.type}, {show_as}, {ev.subject!r}, version {ev.version}"
            out[slot_external_id(link.key, event_id)] = (inst.start_utc, inst.end_utc, event_id, what)
        return out

    def check_slots(self, link: SoakLink) -> None:
        report = self.report
        expected = self.expected_slots(link)
        slots = {s.external_id: s for s in self.stack.timum.list_slots(link.key.provider_id, link.key.resource_id,
                                                                       source="outlook")}
        report.expected_slots += len(expected)
        report.actual_slots += len(slots)
        for ext, (start, end, event_id, what) in sorted(expected.items()):
            slot = slots.get(ext)
            if slot is None:
                report.problems.append(f"{link.key}: missing blocked slot {ext} ({start:%m-%d %H:%M}) for "
                                       f"{what}; our status row: {self.status_row(link, event_id)}")
            elif (slot.start, slot.end) != (start, end):
                report.problems.append(f"{link.key}: slot {ext} at {slot.start:%m-%d %H:%M}–{slot.end:%H:%M}, "
                                       f"event at {start:%m-%d %H:%M}–{end:%H:%M}")
        for ext in sorted(set(slots) - set(expected)):
            report.problems.append(f"{link.key}: blocked slot {ext} has no blocking event "
                                   f"({slots[ext].start:%m-%d %H:%M})")

    def status_row(self, link: SoakLink, event_id: str) -> str:
        from shared.repos.sync_state import EventMapRepository

        row = self.stack.run(EventMapRepository(self.stack.storage).get(link.key, event_id))
        if row is None:
            return "none"
        return (f"hash {row.content_hash[:8] or 'pending'}, pending round {row.pending_round or '-'}, "
                f"{row.slot_start:%m-%d %H:%M}")

    def check_bookings(self, link: SoakLink) -> None:
        report, stack = self.report, self.stack
        confirmed = {b.id: b for b in stack.timum.list_bookings(link.key.provider_id, link.key.resource_id)
                     if b.status == "confirmed"}
        ours: dict[str, list[Any]] = {}
        for event in stack.graph.calendar_events(link.calendar_id):
            for _, value in event.ext_props.values():
                ours.setdefault(value, []).append(event)
        report.active_bookings += len(confirmed)
        report.booking_events += sum(len(v) for v in ours.values())
        for booking_id, booking in sorted(confirmed.items()):
            events = ours.get(booking_id, [])
            if not events:
                report.problems.append(f"{link.key}: booking {booking_id} has no Outlook event")
                continue
            if len(events) > 1:
                report.problems.append(f"{link.key}: booking {booking_id} has {len(events)} Outlook events")
            inst = stack.graph.instance(events[0], None)
            if (inst.start_utc, inst.end_utc) != (booking.start.astimezone(UTC), booking.end.astimezone(UTC)):
                report.problems.append(f"{link.key}: event of booking {booking_id} at {inst.start_utc:%m-%d %H:%M}, "
                                       f"booking at {booking.start.astimezone(UTC):%m-%d %H:%M}")
        for booking_id in sorted(set(ours) - set(confirmed)):
            report.problems.append(f"{link.key}: Outlook event(s) for booking {booking_id}, which is not confirmed")


#: step kind → the Soak method that performs it (every kind of WEIGHTS and ORG_KINDS)
_ACTIONS: dict[str, Callable[[Soak, SoakLink, dict[str, Any]], bool | None]] = {
    kind: getattr(Soak, f"_{kind}") for kind in (*(k for k, _ in WEIGHTS), *ORG_KINDS)
}


#: Grace of an abrupt crash: running invocations are cut off wherever they are.
ABRUPT_GRACE_SECONDS = 1.0


def restart_host(stack: Stack, *, grace: float) -> None:
    """Stop the stack's host and start a new one on the same port, as a new worker process would:
    the app's per-process caches are dropped. ``grace`` is what the *new* host gives running
    invocations when it is stopped in turn — the next crash."""
    from devtools.devhost import run_in_thread
    from shared import wiring

    old = stack.host
    port = urlsplit(old.base_url).port
    old.stop(timeout=60)
    wiring.reset()
    stack.host = run_in_thread("function_app", port=port, host_json=str(ROOT / "host.json"),
                               function_directory=str(ROOT), shutdown_timeout=max(grace, 0.01),
                               after_stop=close_app_clients)


async def close_app_clients() -> None:
    """What the end of a worker process does to the clients the functions cached: without it they
    report themselves as unclosed whenever the garbage collector meets them later."""
    from shared import wiring

    services = wiring.get_services()
    closer = getattr(services.timum, "close", None)
    if closer is not None:
        await closer()
    await services.storage.close()


def run_soak(config: SoakConfig, log: Callable[[str], None] = print) -> SoakReport:
    from devtools.stack import start_stack

    stack = start_stack(seed_demo=False, graph_seed=config.seed)
    try:
        soak = Soak(stack, config, log)
        soak.setup()
        log(f"{len(soak.links)} links ready; running {config.steps} steps (seed {config.seed})")
        return soak.run()
    finally:
        stack.stop()
