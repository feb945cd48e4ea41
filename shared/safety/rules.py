"""The provider's blocking rules as the settings API shows and accepts them.

The rules themselves are applied in one place only, ``shared.core.outlook_plan.blocks_time``;
this module maps them to and from JSON (``blocking`` per Outlook status, ``allDayBlocksWhenFree``).
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
FIELDS = frozenset({BLOCKING, ALL_DAY_FREE})


def rules_json(settings: ProviderSettings) -> dict[str, Any]:
    return {BLOCKING: {status: status_blocks(settings, status) for status in SHOW_AS_STATUSES},
            ALL_DAY_FREE: settings.all_day_free_blocks}


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
    return replace(settings, **values)
