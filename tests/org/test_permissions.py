"""Every permission we ask for has a readable name and reason in both languages, the sandbox's app
registration holds what the organisation path asks for, and docs/permissions.md lists them all."""

from __future__ import annotations

from pathlib import Path

from devtools.sandbox.identity.pages import APP_ROLE_TITLES
from devtools.sandbox.identity.protocol import APPLICATION_ROLES, CONFIGURED_DELEGATED
from shared.connect.msal_client import DELEGATED_SCOPES
from shared.i18n import LOCALES
from shared.org.permissions import APPLICATION, DELEGATED, ORG_SIGN_IN_SCOPES, REQUIRED_APP_ROLES, readable

DOC = (Path(__file__).resolve().parents[2] / "docs" / "permissions.md").read_text(encoding="utf-8")


def test_both_paths_are_named_for_people_never_raw() -> None:
    for locale in LOCALES:
        for perms in (DELEGATED, APPLICATION):
            for item in readable(locale, perms):
                assert item["title"] and item["reason"]
                assert item["name"] not in item["title"]  # never "MailboxSettings.Read" on a page
    assert tuple(p.name for p in DELEGATED) == DELEGATED_SCOPES


def test_least_privilege_on_each_path() -> None:
    # The single-calendar path asks for no application permission at all; the organisation
    # sign-in only for the profile.
    assert all(p.kind == "delegated" for p in DELEGATED)
    assert ORG_SIGN_IN_SCOPES == ("User.Read",)
    assert {p.name for p in APPLICATION} >= REQUIRED_APP_ROLES
    # What the sandbox's registration lists is what we ask for, nothing more.
    assert {p.name for p in APPLICATION} == set(APPLICATION_ROLES) == set(APP_ROLE_TITLES)
    assert set(CONFIGURED_DELEGATED) == set(DELEGATED_SCOPES)


def test_the_administrators_page_lists_every_permission() -> None:
    for perm in (*DELEGATED, *APPLICATION):
        assert f"`{perm.name}`" in DOC
    assert "RBAC for Applications" in DOC and "ErrorAccessDenied" in DOC
