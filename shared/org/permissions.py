"""The Microsoft Graph permissions each path asks for, with the names people read on our pages.

Least privilege on both paths:

* **One calendar** (delegated): the signed-in person's own and shared calendars. When the
  tenant lets only administrators consent, the administrator is asked to grant exactly these
  delegated permissions for the organisation's users — no application permission.
* **Whole organisation** (application, client credentials): the administrator grants the
  application permissions below once; every mapped calendar is then reached app-only, with
  push notifications even for shared and room calendars. The sign-in that starts this path only
  identifies the person and the tenant (``User.Read``).

``docs/permissions.md`` says the same for administrators; ``tests/org/test_permissions.py``
keeps the two and the sandbox's app registration in step.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.i18n import message


@dataclass(frozen=True)
class Permission:
    name: str
    kind: str            # "delegated" | "application"

    def title(self, locale: str) -> str:
        return message(locale, f"perm.{self.kind}.{self.name}")

    def reason(self, locale: str) -> str:
        return message(locale, f"perm.why.{self.kind}.{self.name}")


#: the single-calendar path (MSAL adds openid, profile, offline_access itself)
DELEGATED: tuple[Permission, ...] = tuple(Permission(n, "delegated") for n in (
    "User.Read", "Calendars.ReadWrite", "Calendars.ReadWrite.Shared", "MailboxSettings.Read"))
#: the organisation path
APPLICATION: tuple[Permission, ...] = tuple(Permission(n, "application") for n in (
    "Calendars.ReadWrite", "MailboxSettings.Read", "User.Read.All", "Place.Read.All"))
#: the organisation path's sign-in: who is connecting, in which tenant
ORG_SIGN_IN_SCOPES: tuple[str, ...] = ("User.Read",)
#: without these the organisation page cannot work at all; the others degrade gracefully
#: (no mailbox time zone → the resource's; no Place.Read.All → rooms are found among the users)
REQUIRED_APP_ROLES = frozenset({"Calendars.ReadWrite", "User.Read.All"})
GRAPH = "https://graph.microsoft.com/"


def delegated_consent_scope() -> str:
    """The ``scope`` of an admin-consent request for the delegated permissions only."""
    return " ".join(GRAPH + p.name for p in DELEGATED)


def readable(locale: str, perms: tuple[Permission, ...]) -> list[dict[str, str]]:
    return [{"name": p.name, "title": p.title(locale), "reason": p.reason(locale)} for p in perms]
