"""The provider's booking-safety settings as the settings API shows and accepts them: blocking
rules (``blocking`` per Outlook status, ``allDayBlocksWhenFree``), the ``stale`` threshold
(``staleAfterMinutes``) and the reconnect reminder days (``reconnectReminderDays``).

The blocking rules themselves are applied in one place only, ``shared.core.outlook_plan.blocks_time``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from shared.core.outlook_plan import RULE_FIELDS, SHOW_AS_STATUSES, status_blocks
from shared.domain import ProviderSettings
from shared.errors import BadRequest

BLOCKING = "blocking"
ALL_DAY_FREE = "allDayBlocksWhenFree"
TENTATIVE = "tentativeBlocks"
STALE_AFTER = "staleAfterMinutes"
REMINDER_DAYS = "reconnectReminderDays"
FIELDS = frozenset({BLOCKING, ALL_DAY_FREE, STALE_AFTER, REMINDER_DAYS})
#: a week: beyond it "stale" no longer warns of anything
MAX_STALE_AFTER_MINUTES = 7 * 24 * 60
MAX_REMINDERS = 10
MAX_REMINDER_DAY = 90


def reminder_days(settings: ProviderSettings) -> list[int]:
    """The provider's reminder days, sorted; an unreadable stored value counts as none."""
    try:
        days = sorted({int(part) for part in settings.reconnect_reminder_days.split(",") if part.strip()})
    except ValueError:
        return []
    return [d for d in days if 1 <= d <= MAX_REMINDER_DAY][:MAX_REMINDERS]


def rules_json(settings: ProviderSettings) -> dict[str, Any]:
    return {BLOCKING: {status: status_blocks(settings, status) for status in SHOW_AS_STATUSES},
            ALL_DAY_FREE: settings.all_day_free_blocks, STALE_AFTER: settings.stale_after_minutes,
            REMINDER_DAYS: reminder_days(settings)}


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false", field=name)
    return value


def parse_rules(data: dict[str, Any], settings: ProviderSettings) -> ProviderSettings:
    """Apply the rule fields of a settings body; statuses left out keep their rule.

    ``tentativeBlocks`` (the older, single rule) and ``blocking.tentative`` name the same rule;
    a body that gives both must agree, or nothing is saved."""
    values: dict[str, Any] = {}
    if BLOCKING in data:
        blocking = data[BLOCKING]
        if not isinstance(blocking, dict):
            raise BadRequest(f"{BLOCKING} must be an object of status: true|false", field=BLOCKING)
        unknown = sorted(set(blocking) - set(SHOW_AS_STATUSES))
        if unknown:
            raise BadRequest(f"{BLOCKING}.{unknown[0]} is not an Outlook status ({', '.join(SHOW_AS_STATUSES)})",
                             field=f"{BLOCKING}.{unknown[0]}")
        for status, value in blocking.items():
            values[RULE_FIELDS[status]] = _flag(value, f"{BLOCKING}.{status}")
    if TENTATIVE in data:
        tentative = _flag(data[TENTATIVE], TENTATIVE)
        if values.get("tentative_blocks", tentative) != tentative:
            raise BadRequest(f"{TENTATIVE} and {BLOCKING}.tentative disagree", field=TENTATIVE)
        values["tentative_blocks"] = tentative
    if ALL_DAY_FREE in data:
        values["all_day_free_blocks"] = _flag(data[ALL_DAY_FREE], ALL_DAY_FREE)
    if STALE_AFTER in data:
        minutes = data[STALE_AFTER]
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 0 <= minutes <= MAX_STALE_AFTER_MINUTES:
            raise BadRequest(f"{STALE_AFTER} must be a whole number of minutes from 0 (off) to "
                             f"{MAX_STALE_AFTER_MINUTES}", field=STALE_AFTER)
        values["stale_after_minutes"] = minutes
    if REMINDER_DAYS in data:
        days = data[REMINDER_DAYS]
        if (not isinstance(days, list) or len(days) > MAX_REMINDERS
                or any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_REMINDER_DAY for d in days)):
            raise BadRequest(f"{REMINDER_DAYS} must be a list of at most {MAX_REMINDERS} days from 1 to "
                             f"{MAX_REMINDER_DAY}", field=REMINDER_DAYS)
        values["reconnect_reminder_days"] = ",".join(str(d) for d in sorted(set(days)))
    return replace(settings, **values)
