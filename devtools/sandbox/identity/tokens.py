"""The JSON side of the identity stand-in: OpenID discovery and signing keys, and the OAuth 2.0
token endpoint — client authentication (secret in the body or HTTP Basic), code redemption with
PKCE, refresh tokens, client credentials, and minting of access and ID tokens. Every failure is
answered as Entra answers it, a JSON error with the AADSTS code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from devtools.sandbox.directory import AccessClaims, AppRegistration, SandboxTenant, SandboxUser
from devtools.sandbox.identity.platform import IdentityPlatform
from devtools.sandbox.identity.protocol import (
    GLOBAL_ADMINISTRATOR,
    GRAPH_APP_ID,
    GRAPH_RESOURCE,
    OAuthError,
    Scopes,
    Trace,
    account_disabled,
    b64url,
    client_info,
    consent_missing,
    missing_parameter,
    parse_scopes,
    read_form,
)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenEndpoint:
    """Serves discovery, keys and ``/{tenant}/oauth2/v2.0/token``; owns the key ID tokens are signed with."""

    def __init__(self, platform: IdentityPlatform) -> None:
        self.platform = platform
        self.directory = platform.directory
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = b64url(secrets.token_bytes(15))

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/common/discovery/instance", self._instance_discovery, methods=["GET"]),
            Route("/{tenant}/v2.0/.well-known/openid-configuration", self._openid_configuration, methods=["GET"]),
            Route("/{tenant}/discovery/v2.0/keys", self._jwks, methods=["GET"]),
            Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
        ]

    # --- discovery -------------------------------------------------------------------------
    async def _instance_discovery(self, request: Request) -> Response:
        # Only used when a client passes this host as its instance-discovery endpoint.
        base = self.platform.base
        endpoint = request.query_params.get("authorization_endpoint", "")
        parts = urlsplit(endpoint)
        tenant = parts.path.strip("/").split("/")[0] if parts.path.strip("/") else "common"
        host = urlsplit(base).netloc
        return JSONResponse({
            "tenant_discovery_endpoint": f"{base}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        })

    async def _openid_configuration(self, request: Request) -> Response:
        base = self.platform.base
        tenant_path = request.path_params["tenant"]
        trace = Trace.of(request)
        try:
            tenant = self.platform.resolve_tenant(tenant_path)
        except OAuthError as err:
            return self._json_error(err, trace)
        path = tenant_path if tenant is None else tenant.id
        issuer_tid = "{tenantid}" if tenant is None else tenant.id
        host = urlsplit(base).netloc
        return JSONResponse({
            "token_endpoint": f"{base}/{path}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/{path}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{issuer_tid}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{base}/oidc/userinfo",
            "authorization_endpoint": f"{base}/{path}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{path}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{path}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
                "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name",
                "tid", "ver", "at_hash", "c_hash", "email",
            ],
            "kerberos_endpoint": f"{base}/{path}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": host,
            "rbac_url": "https://pas.windows.net",
        })

    async def _jwks(self, request: Request) -> Response:
        numbers = self._signing_key.public_key().public_numbers()
        return JSONResponse({"keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self._kid,
            "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
        }]})

    # --- token -----------------------------------------------------------------------------
    async def _token(self, request: Request) -> Response:
        trace = Trace.of(request)
        tenant_path = request.path_params["tenant"]
        try:
            form = await read_form(request)
            tenant = self.platform.resolve_tenant(tenant_path)
            grant_type = form.get("grant_type")
            if not grant_type:
                raise missing_parameter("grant_type")
            if grant_type not in ("authorization_code", "refresh_token", "client_credentials"):
                raise OAuthError("unsupported_grant_type", 70003,
                                 f"The app requested an unsupported grant type '{grant_type}'.")
            app = self._authenticate_client(request, form, tenant, tenant_path)
            if grant_type == "authorization_code":
                body = self._redeem_code(form, app, tenant)
            elif grant_type == "refresh_token":
                body = self._redeem_refresh_token(form, app, tenant)
            else:
                body = self._client_credentials(form, app, tenant)
        except OAuthError as err:
            return self._json_error(err, trace)
        return JSONResponse(body, headers={**NO_STORE, "client-request-id": trace.correlation_id,
                                           "x-ms-request-id": trace.trace_id})

    def _json_error(self, err: OAuthError, trace: Trace) -> Response:
        return JSONResponse({
            "error": err.error,
            "error_description": trace.describe(err),
            "error_codes": [err.code],
            "timestamp": trace.timestamp,
            "trace_id": trace.trace_id,
            "correlation_id": trace.correlation_id,
            "error_uri": self.platform.error_uri(err.code),
        }, status_code=err.status, headers=NO_STORE)

    def _authenticate_client(self, request: Request, form: Mapping[str, str], tenant: SandboxTenant | None,
                             tenant_path: str) -> AppRegistration:
        client_id = form.get("client_id")
        secret = form.get("client_secret")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            # RFC 6749 §2.3.1: id and secret are form-encoded, then joined by a colon.
            try:
                raw = base64.b64decode(auth[6:].strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError) as exc:
                raise OAuthError("invalid_client", 7000215, "Invalid client secret provided.", status=401) from exc
            basic_id, _, basic_secret = raw.partition(":")
            basic_id = dict(parse_qsl(f"v={basic_id}"))["v"] if basic_id else ""
            basic_secret = dict(parse_qsl(f"v={basic_secret}", keep_blank_values=True)).get("v", "")
            if client_id and client_id != basic_id:
                raise OAuthError("invalid_request", 9002313,
                                 "Invalid request. The client_id in the body differs from the one in the "
                                 "Authorization header.")
            client_id, secret = basic_id, basic_secret
        app = self.platform.app_for(client_id, tenant_path, tenant=tenant)
        if form.get("client_assertion"):
            raise OAuthError("invalid_client", 700027,
                             "Client assertion failed signature validation: the sandbox app has only a secret.",
                             status=401)
        if not secret:
            raise OAuthError("invalid_client", 7000218, "The request body must contain the following parameter: "
                             "'client_assertion' or 'client_secret'.", status=401)
        if not hmac.compare_digest(secret.encode(), app.client_secret.encode()):
            raise OAuthError("invalid_client", 7000215,
                             "Invalid client secret provided. Ensure the secret being sent in the request is the "
                             f"client secret value, not the client secret ID, for a secret added to app "
                             f"'{app.client_id}'.", status=401)
        return app

    def _redeem_code(self, form: Mapping[str, str], app: AppRegistration, tenant: SandboxTenant | None
                     ) -> dict[str, Any]:
        code_value = form.get("code")
        if not code_value:
            raise missing_parameter("code")
        now = self.platform.clock()
        entry = self.platform.spend_code(code_value)
        if entry.expires_at <= now:
            raise OAuthError("invalid_grant", 70008, "The provided authorization code or refresh token has expired "
                             "due to inactivity. Send a new interactive authorization request for this user and "
                             "resource.")
        if entry.client_id != app.client_id:
            raise OAuthError("invalid_grant", 70000, "The provided value for the 'code' parameter is not valid. "
                             "The code was issued to a different client.")
        if tenant is not None and tenant.id != entry.tenant_id:
            raise OAuthError("invalid_grant", 700005, "Provided Authorization Code is intended to use against other "
                             "tenant, thus rejected.")
        if form.get("redirect_uri") != entry.redirect_uri:
            raise OAuthError("invalid_client", 500112, f"The reply address '{form.get('redirect_uri') or ''}' does "
                             f"not match the reply address '{entry.redirect_uri}' provided when requesting "
                             "Authorization code.", status=401)
        if entry.code_challenge is not None:
            verifier = form.get("code_verifier") or ""
            if entry.code_challenge_method == "S256":
                computed = b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
            else:
                computed = verifier
            if not verifier or not hmac.compare_digest(computed, entry.code_challenge):
                raise OAuthError("invalid_grant", 50148, "The code_verifier does not match the code_challenge "
                                 "supplied in the authorization request for PKCE.")
        user = self.directory.users[entry.user_id]
        if not user.account_enabled:
            raise account_disabled()
        scopes = parse_scopes(form["scope"]) if form.get("scope") else entry.scopes
        return self._user_tokens(app, user, scopes, nonce=entry.nonce, auth_time=entry.auth_time)

    def _redeem_refresh_token(self, form: Mapping[str, str], app: AppRegistration, tenant: SandboxTenant | None
                              ) -> dict[str, Any]:
        value = form.get("refresh_token")
        if not value:
            raise missing_parameter("refresh_token")
        grant = self.directory.refresh_tokens.get(value)
        if grant is None:
            raise OAuthError("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        if grant.client_id != app.client_id:
            raise OAuthError("invalid_grant", 70000, "The provided refresh token was issued to a different client.")
        if tenant is not None and tenant.id != grant.tenant_id:
            raise OAuthError("invalid_grant", 700005, "Provided grant is intended to use against other tenant, "
                             "thus rejected.")
        if grant.revoked:
            if grant.revoked_code == 50173:
                raise OAuthError("invalid_grant", 50173, "The provided grant has expired due to it being revoked, a "
                                 "fresh auth token is needed. The user might have changed or reset their password.")
            raise OAuthError("invalid_grant", grant.revoked_code, "The refresh token has expired due to inactivity "
                             "or was revoked. Send a new interactive authorization request for this user and "
                             "resource.")
        user = self.directory.users[grant.user_id]
        if not user.account_enabled:
            raise account_disabled()
        if not self.directory.has_delegated_consent(user.id, app.client_id):
            raise consent_missing(app, error="invalid_grant")
        scopes = parse_scopes(form["scope"]) if form.get("scope") else Scopes.from_grant(grant.scopes)
        if "offline_access" in grant.scopes:
            # The grant already allows offline access; a refresh keeps doing so even when the
            # client does not repeat offline_access in the scope.
            scopes = Scopes(scopes.permissions, scopes.written, scopes.oidc | {"offline_access"})
        body = self._user_tokens(app, user, scopes, nonce=None, auth_time=None)
        self.directory.issued_by_refresh(str(body["access_token"]), form.get("claims"))
        return body

    def _client_credentials(self, form: Mapping[str, str], app: AppRegistration, tenant: SandboxTenant | None
                            ) -> dict[str, Any]:
        if tenant is None:
            raise OAuthError("invalid_request", 50059, "No tenant-identifying information found in either the "
                             "request or implied by any provided credentials.")
        scope = form.get("scope")
        if not scope:
            raise missing_parameter("scope")
        items = scope.split()
        if len(items) != 1 or not items[0].endswith("/.default"):
            raise OAuthError("invalid_scope", 1002012, f"The provided value for scope {scope} is not valid. Client "
                             "credential flows must have a scope value with /.default suffixed to the resource "
                             "identifier (application ID URI).")
        resource = items[0][: -len("/.default")]
        if resource.lower().rstrip("/") not in (GRAPH_RESOURCE, GRAPH_APP_ID):
            raise OAuthError("invalid_resource", 500011, f"The resource principal named {resource} was not found in "
                             f"the tenant named {tenant.name}. This can happen if the application has not been "
                             "installed by the administrator of the tenant or consented to by any user in the tenant.")
        if not self.directory.has_service_principal(tenant.id, app.client_id):
            raise OAuthError("invalid_client", 7000229, f"The client application {app.client_id} is missing service "
                             f"principal in the tenant {tenant.id}. See instructions here: "
                             "https://go.microsoft.com/fwlink/?linkid=2225119", status=401)
        granted = tenant.app_role_grants.get(app.client_id, frozenset())
        token, claims = self.directory.issue_access_token(
            tenant_id=tenant.id, client_id=app.client_id, user_id=None,
            roles=granted, lifetime=self.platform.access_token_lifetime)
        # Entra's app-only tokens for Graph are JWTs whose roles claim lists the granted
        # application permissions; apps read it to tell admin consent from a bare service principal.
        jwt = self._app_access_token(app, tenant, claims.roles, int(claims.expires_at))
        self.directory.rename_access_token(token, jwt)
        lifetime = _expires_in(claims)
        return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": jwt}

    # --- minting ---------------------------------------------------------------------------
    def _user_tokens(self, app: AppRegistration, user: SandboxUser, scopes: Scopes, *, nonce: str | None,
                     auth_time: int | None) -> dict[str, Any]:
        token, claims = self.directory.issue_access_token(
            tenant_id=user.tenant_id, client_id=app.client_id, user_id=user.id, scopes=scopes.for_token,
            lifetime=self.platform.access_token_lifetime)
        lifetime = _expires_in(claims)
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": scopes.response_scope(),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }
        if "offline_access" in scopes.oidc:
            body["refresh_token"] = self.directory.issue_refresh_token(
                tenant_id=user.tenant_id, client_id=app.client_id, user_id=user.id,
                scopes=frozenset(scopes.permissions) | scopes.oidc)
        if "openid" in scopes.oidc:
            body["id_token"] = self._id_token(app, user, scopes, nonce=nonce, auth_time=auth_time)
        body["client_info"] = client_info(user)
        return body

    def _app_access_token(self, app: AppRegistration, tenant: SandboxTenant, roles: frozenset[str],
                          expires_at: int) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": GRAPH_RESOURCE, "iss": f"https://sts.windows.net/{tenant.id}/", "iat": now, "nbf": now,
            "exp": expires_at, "appid": app.client_id, "idtyp": "app", "oid": app.client_id, "tid": tenant.id,
            "uti": b64url(secrets.token_bytes(16)), "ver": "1.0",
        }
        if roles:
            claims["roles"] = sorted(roles)
        return self._signed_jwt(claims)

    def _id_token(self, app: AppRegistration, user: SandboxUser, scopes: Scopes, *, nonce: str | None,
                  auth_time: int | None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": app.client_id,
            "iss": self.platform.issuer(user.tenant_id),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": user.display_name,
            "oid": user.id,
            "preferred_username": user.mail,
            # Entra's sub is pairwise: stable per user and app, different across apps.
            "sub": b64url(hashlib.sha256(f"{user.id}:{app.client_id}".encode()).digest()[:24]),
            "tid": user.tenant_id,
            "uti": b64url(secrets.token_bytes(16)),
            "ver": "2.0",
        }
        if "email" in scopes.oidc:
            claims["email"] = user.mail
        if user.is_admin:
            # The registration's groupMembershipClaims includes DirectoryRole: Entra then names the
            # user's directory roles (role template ids) in ``wids``. Sandbox admins are Global Administrators.
            claims["wids"] = [GLOBAL_ADMINISTRATOR]
        if nonce is not None:
            claims["nonce"] = nonce
        if auth_time is not None:
            claims["auth_time"] = auth_time
        return self._signed_jwt(claims)

    def _signed_jwt(self, claims: Mapping[str, Any]) -> str:
        """An RS256 JWT under the key published at ``jwks_uri``."""
        header = {"typ": "JWT", "alg": "RS256", "kid": self._kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        signature = self._signing_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"


def _expires_in(claims: AccessClaims) -> int:
    return max(0, int(claims.expires_at - time.time()))
