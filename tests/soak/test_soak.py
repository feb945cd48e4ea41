"""A short, seeded fault-injection soak over the whole stack (the long one: ``python -m bench.soak``).

Seed 3's 150 steps include every kind of step — Outlook and booking edits, replayed and reordered
deliveries, crashes, token revocation and reconnect, subscription removal, missed notifications,
lost delta state — with 10 % of Graph and timum calls failing (429, 503, timeouts).
"""

from __future__ import annotations

import logging

import pytest

from devtools.soak import ORG_KINDS, WEIGHTS, SoakConfig, make_plan, run_soak

SEED = 3
STEPS = 150

log = logging.getLogger(__name__)


def test_the_plan_is_a_function_of_the_seed_and_covers_every_step_kind() -> None:
    plan = make_plan(SEED, STEPS, 4)
    assert plan == make_plan(SEED, STEPS, 4)
    assert plan != make_plan(SEED + 1, STEPS, 4)
    assert {step.kind for step in plan} == {kind for kind, _ in WEIGHTS} | set(ORG_KINDS)


@pytest.mark.stack
def test_after_faults_and_crashes_both_sides_agree() -> None:
    report = run_soak(SoakConfig(steps=STEPS, seed=SEED), log=log.info)
    summary = "\n".join(report.lines())
    log.info("%s", summary)
    assert report.problems == [], summary
    assert report.crashes >= 1 and report.graph_faults + report.timum_faults >= 1, summary
    assert report.expected_slots == report.actual_slots > 0, summary
    assert report.active_bookings == report.booking_events > 0, summary
