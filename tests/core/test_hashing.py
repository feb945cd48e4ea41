"""Content hashes ignore volatile fields and sub-second noise, and see every real change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.core.hashing import content_hash, normalise
from shared.domain import BlockedSlot, TitlePrivacy

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def test_volatile_fields_do_not_count() -> None:
    base = {"id": "e1", "subject": "Zahnarzt", "start": T0}
    bumped = {**base, "@odata.etag": 'W/"2"', "changeKey": "abc", "lastModifiedDateTime": T0 + timedelta(hours=1)}
    assert content_hash(base) == content_hash(bumped)


def test_times_are_compared_as_instants_to_the_second() -> None:
    berlin = timezone(timedelta(hours=1))
    assert content_hash({"t": T0}) == content_hash({"t": T0.astimezone(berlin)})
    assert content_hash({"t": T0}) == content_hash({"t": T0 + timedelta(microseconds=999)})
    assert content_hash({"t": T0}) != content_hash({"t": T0 + timedelta(seconds=1)})


def test_order_and_container_kind_do_not_count() -> None:
    assert content_hash({"a": 1, "b": (1, 2)}) == content_hash({"b": [1, 2], "a": 1})
    assert content_hash({"s": {"x", "y"}}) == content_hash({"s": frozenset({"y", "x"})})


def test_real_changes_count() -> None:
    slot = BlockedSlot("ol-1", T0, T0 + timedelta(hours=1))
    assert content_hash(slot) == content_hash(BlockedSlot("ol-1", T0, T0 + timedelta(hours=1)))
    for changed in (BlockedSlot("ol-2", T0, T0 + timedelta(hours=1)),
                    BlockedSlot("ol-1", T0, T0 + timedelta(hours=2)),
                    BlockedSlot("ol-1", T0, T0 + timedelta(hours=1), all_day=True),
                    BlockedSlot("ol-1", T0, T0 + timedelta(hours=1), title="Outlook")):
        assert content_hash(changed) != content_hash(slot)


def test_hash_is_stable_across_runs() -> None:
    # A stored hash must still match after a restart or a deployment: pin one value.
    slot = BlockedSlot("ol-abc", T0, T0 + timedelta(minutes=30), title="Outlook")
    # Changing the normalisation re-writes every slot once; this test makes that a conscious choice.
    assert content_hash(slot) == "3cfac8a42d36e785272d12b5816772ccf8865ab033efb06ec3145a1660ca1972"


def test_enums_strings_and_bad_input() -> None:
    assert normalise(TitlePrivacy.LABEL) == "label"
    assert normalise("  padded ") == "padded"
    with pytest.raises(ValueError):
        content_hash({"t": datetime(2026, 1, 1)})  # naive
    with pytest.raises(TypeError):
        content_hash({"x": object()})
