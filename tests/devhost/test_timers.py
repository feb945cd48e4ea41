"""Timer triggers: schedules, run_on_startup, past_due and retry policies."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from devtools.devhost import ConfigError, serving
from devtools.devhost.metadata import RetrySpec
from devtools.devhost.timers import CronSchedule, IntervalSchedule, parse_schedule, retry_delay, time_zone
from tests.devhost.sample_app import Recorder, build_app, http_blueprint, retry_blueprint, timer_blueprint
from tests.support.devhost import FAST_HOST_JSON

T0 = datetime(2025, 3, 14, 9, 29, 58, 500000, tzinfo=UTC)


def test_ncrontab_has_seconds_first() -> None:
    every_five = parse_schedule("*/5 * * * * *")
    assert every_five.next_after(T0) == datetime(2025, 3, 14, 9, 30, 0, tzinfo=UTC)
    weekdays = parse_schedule("0 30 9 * * Mon-Fri")
    assert weekdays.next_after(T0) == datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
    # 2025-03-14 is a Friday: the next occurrence after 09:30 skips the weekend.
    assert weekdays.next_after(datetime(2025, 3, 14, 9, 30, tzinfo=UTC)) == datetime(2025, 3, 17, 9, 30, tzinfo=UTC)


def test_five_field_expression_fires_at_second_zero() -> None:
    assert parse_schedule("*/15 * * * *").next_after(T0) == datetime(2025, 3, 14, 9, 30, tzinfo=UTC)


def test_timespan_schedule_is_an_interval() -> None:
    schedule = parse_schedule("00:05:00")
    assert isinstance(schedule, IntervalSchedule)
    assert schedule.next_after(T0) == T0 + timedelta(minutes=5)


def test_website_time_zone_shifts_occurrences() -> None:
    berlin = parse_schedule("0 0 9 * * *", time_zone("Europe/Berlin"))
    assert isinstance(berlin, CronSchedule) and berlin.zone == ZoneInfo("Europe/Berlin")
    assert berlin.next_after(T0) == datetime(2025, 3, 15, 8, 0, tzinfo=UTC)  # 09:00 CET


@pytest.mark.parametrize("text", ["", "* * *", "61 * * * * *", "0 0 0 0 0 0 0", "00:00:00", "soon"])
def test_bad_schedules_are_rejected(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_schedule(text)


def test_bad_time_zone_is_rejected() -> None:
    with pytest.raises(ConfigError, match="WEBSITE_TIME_ZONE"):
        time_zone("Mars/Olympus")


def test_retry_delays() -> None:
    fixed = RetrySpec("fixed_delay", 3, "00:00:02", None, None)
    assert [retry_delay(fixed, n) for n in range(3)] == [2.0, 2.0, 2.0]
    backoff = RetrySpec("exponential_backoff", 5, None, "00:00:01", "00:00:05")
    assert [retry_delay(backoff, n) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


@pytest.mark.stack
def test_run_on_startup_and_every_second_schedule(rec: Recorder, key_env: dict[str, str]) -> None:
    with serving(build_app(timer_blueprint(rec)), port=0, host_json=FAST_HOST_JSON, env=key_env) as host:
        ticks = rec.wait_for("tick", count=3)
        records = host.records("tick")
    startup = rec.items("startup")
    assert len(startup) == 1  # the yearly schedule does not come round again
    assert startup[0]["past_due"] is False
    nexts = [datetime.fromisoformat(t["status"]["Next"]) for t in ticks[:3]]
    assert nexts == sorted(nexts) and len(set(nexts)) == 3
    assert all(n.microsecond == 0 for n in nexts)  # occurrences fall on whole seconds
    assert all(r.trigger == "timer" and r.outcome == "succeeded" for r in records)


@pytest.mark.stack
def test_late_invocation_is_past_due(rec: Recorder, key_env: dict[str, str]) -> None:
    app = build_app(timer_blueprint(rec), http_blueprint(rec))
    with serving(app, port=0, host_json=FAST_HOST_JSON, env=key_env) as host:
        rec.wait_for("tick")
        # An async function that blocks the loop for 2.5 s makes the one-second timer late.
        for _ in range(3):
            httpx.get(f"{host.base_url}/api/block", params={"seconds": "2.5"}, timeout=30)
            count = len(rec.items("tick"))
            late = rec.wait_for("tick", count=count + 1)
            if any(t["past_due"] for t in late):
                break
        records = host.records("tick")
    assert any(t["past_due"] for t in rec.items("tick"))
    assert any(r.past_due for r in records)
    assert not rec.items("tick")[0]["past_due"]


@pytest.mark.stack
def test_retry_policy_reruns_a_failed_timer(rec: Recorder, key_env: dict[str, str]) -> None:
    with serving(build_app(retry_blueprint(rec)), port=0, host_json=FAST_HOST_JSON, env=key_env) as host:
        attempts = rec.wait_for("flaky", count=3)
        host.invocations.wait_for(lambda rs: len(rs) == 3, timeout=10)
        outcomes = [r.outcome for r in host.records("flaky")]
    assert [a["attempt"] for a in attempts] == [0, 1, 2]
    assert outcomes == ["failed", "failed", "succeeded"]


@pytest.mark.stack
def test_admin_api_runs_a_timer_on_demand(rec: Recorder, key_env: dict[str, str]) -> None:
    with serving(build_app(timer_blueprint(rec)), port=0, host_json=FAST_HOST_JSON,
                 env={**key_env, "DEVHOST_TICK_SCHEDULE": "0 0 0 1 1 *"}) as host:
        rec.wait_for("startup")
        response = httpx.post(f"{host.base_url}/admin/functions/on_startup", json={},
                              headers={"x-functions-key": key_env["MASTER_KEY"]}, timeout=10)
        assert response.status_code == 202
        assert len(rec.wait_for("startup", count=2)) == 2
        unauthorised = httpx.post(f"{host.base_url}/admin/functions/on_startup", json={},
                                  headers={"x-functions-key": key_env["FUNCTION_KEY"]}, timeout=10)
        assert unauthorised.status_code == 401


@pytest.mark.stack
def test_a_disabled_function_is_not_triggered_but_the_admin_api_still_runs_it(rec: Recorder,
                                                                               key_env: dict[str, str]) -> None:
    # As in Azure: the app setting AzureWebJobs.<name>.Disabled stops the trigger only.
    env = {**key_env, "DEVHOST_TICK_SCHEDULE": "* * * * * *", "AzureWebJobs.tick.Disabled": "true"}
    with serving(build_app(timer_blueprint(rec)), port=0, host_json=FAST_HOST_JSON, env=env) as host:
        rec.wait_for("startup")
        time.sleep(2.5)  # the every-second schedule would have fired twice by now
        assert rec.items("tick") == []
        response = httpx.post(f"{host.base_url}/admin/functions/tick", json={},
                              headers={"x-functions-key": key_env["MASTER_KEY"]}, timeout=10)
        assert response.status_code == 202
        assert len(rec.wait_for("tick")) == 1
