"""Blocking rules per Outlook status: one place decides (``blocks_time``), the settings API shows
and accepts them, and the Graph planner follows them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.core.outlook_plan import SHOW_AS_STATUSES, PlanContext, UpsertBlock, blocks_time, plan_event
from shared.core.window import SyncWindow
from shared.domain import LinkKey, OutlookEvent, ProviderSettings
from shared.errors import BadRequest
from shared.safety.rules import parse_rules, rules_json

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
DEFAULTS = ProviderSettings("p")


def ev(show_as: str, *, all_day: bool = False) -> OutlookEvent:
    start = T0.replace(hour=0) if all_day else T0
    length = timedelta(days=1) if all_day else timedelta(hours=1)
    return OutlookEvent(id="e1", start=start, end=start + length, show_as=show_as, is_all_day=all_day)


@pytest.mark.parametrize(("show_as", "blocks"), [
    ("free", False), ("tentative", True), ("busy", True), ("oof", True), ("workingElsewhere", False),
    ("unknown", True), ("WorkingElsewhere", False), (" Busy ", True), ("someFutureStatus", True), ("", True)])
def test_defaults_are_the_behaviour_before_rules_were_configurable(show_as: str, blocks: bool) -> None:
    assert blocks_time(ev(show_as), DEFAULTS) is blocks


@pytest.mark.parametrize("status", SHOW_AS_STATUSES)
def test_each_status_follows_its_own_rule_only(status: str) -> None:
    flipped = parse_rules({"blocking": {status: not rules_json(DEFAULTS)["blocking"][status]}}, DEFAULTS)
    for other in SHOW_AS_STATUSES:
        expected = blocks_time(ev(other), DEFAULTS)
        assert blocks_time(ev(other), flipped) is (not expected if other == status else expected), (status, other)


def test_statuses_graph_adds_later_follow_the_unknown_rule() -> None:
    lenient = replace(DEFAULTS, unknown_blocks=False)
    assert not blocks_time(ev("someFutureStatus"), lenient)
    assert not blocks_time(ev("unknown"), lenient)
    assert blocks_time(ev("busy"), lenient)


def test_all_day_free_events_block_only_when_the_provider_says_so() -> None:
    strict = parse_rules({"allDayBlocksWhenFree": True}, DEFAULTS)
    assert not blocks_time(ev("free", all_day=True), DEFAULTS)
    assert blocks_time(ev("free", all_day=True), strict)
    # only all-day events: a free one-hour event stays free
    assert not blocks_time(ev("free"), strict)
    # and only "free": working elsewhere all day is still the workingElsewhere rule
    assert not blocks_time(ev("workingElsewhere", all_day=True), strict)


def test_the_planner_uses_the_rules() -> None:
    window = SyncWindow(T0 - timedelta(days=2), T0 + timedelta(days=30))
    link = LinkKey("p", "r")
    event = ev("workingElsewhere")
    default_ctx = PlanContext(link, window, DEFAULTS)
    assert plan_event(default_ctx, event, None) is None
    strict = PlanContext(link, window, parse_rules({"blocking": {"workingElsewhere": True}}, DEFAULTS))
    assert isinstance(plan_event(strict, event, None), UpsertBlock)


def test_tentative_blocks_and_blocking_tentative_are_one_rule() -> None:
    assert parse_rules({"tentativeBlocks": False}, DEFAULTS).tentative_blocks is False
    assert rules_json(parse_rules({"tentativeBlocks": False}, DEFAULTS))["blocking"]["tentative"] is False
    assert parse_rules({"blocking": {"tentative": False}}, DEFAULTS).tentative_blocks is False
    assert parse_rules({"blocking": {"tentative": False}, "tentativeBlocks": False}, DEFAULTS).tentative_blocks is False
    with pytest.raises(BadRequest) as disagree:
        parse_rules({"blocking": {"tentative": False}, "tentativeBlocks": True}, DEFAULTS)
    assert disagree.value.field == "tentativeBlocks"


@pytest.mark.parametrize(("body", "field"), [
    ({"blocking": ["busy"]}, "blocking"),
    ({"blocking": {"bussy": True}}, "blocking.bussy"),
    ({"blocking": {"oof": "yes"}}, "blocking.oof"),
    ({"allDayBlocksWhenFree": 1}, "allDayBlocksWhenFree"),
])
def test_bad_rules_are_refused_with_the_field_named(body: dict[str, object], field: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_rules(body, DEFAULTS)
    assert refused.value.field == field


def test_statuses_left_out_keep_their_rule() -> None:
    custom = parse_rules({"blocking": {"free": True, "busy": False}}, DEFAULTS)
    again = parse_rules({"blocking": {"oof": False}}, custom)
    assert rules_json(again)["blocking"] == {"free": True, "tentative": True, "busy": False, "oof": False,
                                             "workingElsewhere": False, "unknown": True}
