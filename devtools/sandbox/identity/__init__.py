"""Stand-in for the Microsoft identity platform's v2.0 endpoints (login.microsoftonline.com).

Owns sign-in, consent and token issuance for the sandbox: OpenID discovery and keys, the
authorize endpoint with its account picker, consent and "need admin approval" screens, the
token endpoint (authorization_code with PKCE, refresh_token with rotation, client_credentials),
the v2.0 admin-consent endpoint and sign-out. The real MSAL and azure-identity talk to it
unchanged; only the authority host and the CA bundle differ from production.

Where things are:

* :mod:`.platform` — :class:`IdentityPlatform`, the state both sides share (pending sign-ins,
  authorization codes, browser sessions, token lifetime) and the control methods tests and the
  control page (:mod:`devtools.sandbox.identity_control`) call;
* :mod:`.tokens` — the JSON side: discovery, signing keys, the token endpoint and token minting;
* :mod:`.pages` — the browser side: authorize, account picker, consent, admin consent, sign-out;
* :mod:`.protocol` — what both sides speak: permissions, scopes, protocol errors.

What is modelled (and why it matters to the service):
- Tenants may forbid user consent; then only an administrator (or a prior admin consent) lets
  users in, otherwise the app gets ``consent_required`` / AADSTS90094 — the admin-consent dead
  end users of other sync tools complain about.
- Admin consent comes in two kinds, as in Entra: to named delegated scopes (for all users; no
  application permission — what the single-calendar path asks for) and to ``/.default`` (every
  permission of the registration, application permissions included — the organisation path).
  Administrators' ID tokens name their role in ``wids``. Per tenant, an application scope
  (Exchange RBAC for Applications) can leave mailboxes out of app-only access (Graph answers
  403 ``ErrorAccessDenied``), and the app can be deleted (client credentials: AADSTS7000229).
- An app exists in a tenant (has a service principal) once anybody there consented. Client
  credentials fail with AADSTS7000229 without one, and yield a token *without roles* when
  only users consented — as Entra does, so the service must not take a token as proof of
  admin consent.
- Refresh tokens rotate (a new one per use; the old one stays valid, as with Entra) and can be
  revoked (AADSTS700082 / AADSTS50173), the account disabled (AADSTS50057) or the consent
  withdrawn (AADSTS65001): each surfaces as ``invalid_grant`` so the service must ask the user
  to reconnect.
- Access tokens are opaque and live in the shared :class:`Directory`, where the Graph stand-in
  checks them; the ID token is a real RS256 JWT whose keys are published at ``jwks_uri``.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from devtools.sandbox.identity.pages import SignInPages
from devtools.sandbox.identity.platform import IdentityPlatform
from devtools.sandbox.identity.tokens import TokenEndpoint

__all__ = ["IdentityPlatform", "identity_routes"]


def identity_routes(platform: IdentityPlatform) -> list[BaseRoute]:
    """The routes of the HTTPS listener that serve ``platform``: token endpoint and sign-in pages."""
    return [*TokenEndpoint(platform).routes(), *SignInPages(platform).routes()]
