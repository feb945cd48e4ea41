"""The one id rule (shared/ids.py) and the secret comparison that cannot crash."""

from __future__ import annotations

import pytest

from shared.errors import BadRequest
from shared.ids import MAX_ID_LENGTH, check_id, id_problem, is_subscription_id, secrets_equal

BAD_IDS = ["", "a|b", "|", "..", "a..b", "../etc", "a/b", "a\\b", "a#b", "a?b", "a\nb", "a\r", "\x00", "a\x7f",
           "a\u0085b", "a\u2028b", "a\u202eb", "a\u200bb", " a", "a ", "x" * (MAX_ID_LENGTH + 1)]
GOOD_IDS = ["p1", "res-1", "Raum 1", "prov_01:abc@x", "a.b", "Zürich", "x" * MAX_ID_LENGTH]


@pytest.mark.parametrize("value", BAD_IDS)
def test_bad_ids_are_refused_with_the_field_named(value: str) -> None:
    with pytest.raises(BadRequest) as raised:
        check_id(value, "resource")
    assert raised.value.field == "resource" and raised.value.code == "invalid_id"
    assert "\n" not in raised.value.message and "\r" not in raised.value.message


@pytest.mark.parametrize("value", GOOD_IDS)
def test_good_ids_pass_unchanged(value: str) -> None:
    assert check_id(value, "resource") == value and id_problem(value) is None


@pytest.mark.parametrize("value", [None, 3, b"p1"])
def test_non_strings_are_not_ids(value: object) -> None:
    assert id_problem(value) == "is missing"


def test_subscription_ids_are_guids_only() -> None:
    assert is_subscription_id("0f8e2a3c-5b1d-4c7e-9a6f-1d2e3f4a5b6c")
    assert is_subscription_id("0F8E2A3C-5B1D-4C7E-9A6F-1D2E3F4A5B6C")
    for value in ("sub-1", "0f8e2a3c-5b1d-4c7e-9a6f-1d2e3f4a5b6c\n", "0f8e2a3c5b1d4c7e9a6f1d2e3f4a5b6c", None, 7,
                  "{0f8e2a3c-5b1d-4c7e-9a6f-1d2e3f4a5b6c}", "0f8e2a3c-5b1d-4c7e-9a6f-1d2e3f4a5b6"):
        assert not is_subscription_id(value)


@pytest.mark.parametrize("given", ["é", "ünïcödé-csrf", "\udcff", "a" * 64, "", "\x00"])
def test_secret_comparison_never_raises_and_refuses_non_matches(given: str) -> None:
    assert secrets_equal("0123abcd" * 8, given) is False


def test_secret_comparison_matches_equal_values_of_any_characters() -> None:
    assert secrets_equal("geheim-ß", "geheim-ß") and secrets_equal(b"k", b"k")
    assert not secrets_equal("k", None)
