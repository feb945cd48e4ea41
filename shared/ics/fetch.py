"""Fetch a published Outlook calendar (ICS URL) without becoming an SSRF proxy.

The URL comes from a user, so every connection — including each redirect hop — is checked
*at connect time* against the address it actually reaches: only globally routable addresses
(``ipaddress``'s ``is_global``, an allow-list by construction) are admitted, so private,
CGNAT, link-local, multicast, reserved, cloud-platform addresses (169.254.169.254,
168.63.129.16), 6to4 / Teredo wrappers of private IPv4, site-local fec0::/10 and every
special-purpose block IANA lists are refused without a denylist to keep current. Checking at
connect time (a guarded httpcore network backend) also defeats DNS rebinding, which a check
before the request would miss. Production allows only https; a development setting admits
loopback so the sandbox's published calendars can be imported.

The whole fetch — every hop, headers and body — has one deadline (``DEADLINE``): a server
that trickles bytes cannot hold a worker beyond it.

Outlook answers HTML to non-browser user agents since 2025, hence the browser-like UA.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from shared.errors import BadRequest, NotFound, TransientError
from shared.ics.reader import IcsLimitExceeded
from shared.ports import IcsFetchPort

USER_AGENT = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/131.0.0.0 Safari/537.36 timum-outlook-sync")
MAX_BYTES = 5 * 1024 * 1024
MAX_REDIRECTS = 5
TIMEOUT = httpx.Timeout(15.0, connect=5.0)
#: Seconds for the whole fetch, redirects and body included.
DEADLINE = 30.0
#: Global by IANA's registry yet platform-internal: Azure's wire server (DNS, DHCP, health).
_PLATFORM = {ipaddress.ip_address("168.63.129.16")}
#: fec0::/10 (deprecated site-local) counts as global to ``ipaddress``; it is routed internally.
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")
#: IETF protocol assignments; only .9 and .10 are globally reachable (RFC 7723, RFC 8155).
#: Python before 3.12.4 calls the whole block global.
_IETF_PROTOCOL = ipaddress.ip_network("192.0.0.0/24")
_IETF_GLOBAL = {ipaddress.ip_address("192.0.0.9"), ipaddress.ip_address("192.0.0.10")}


class UnsafeAddress(BadRequest):
    code = "ics_unsafe_address"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 transition address wraps (mapped, 6to4, Teredo, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool) -> bool:
    """Only globally routable addresses (loopback too when ``allow_loopback``, for development)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        inner = _embedded_ipv4(ip)
        if inner is not None:
            # The wrapper is only as good as what it wraps (6to4 of 10.0.0.1 reaches 10.0.0.1).
            return address_allowed(inner, allow_loopback=allow_loopback)
        if ip in _SITE_LOCAL:
            return False
    if ip.is_loopback:
        return allow_loopback
    if isinstance(ip, ipaddress.IPv4Address) and ip in _IETF_PROTOCOL and ip not in _IETF_GLOBAL:
        return False
    return ip.is_global and not ip.is_multicast and ip not in _PLATFORM


def check_url(url: str, *, allow_loopback: bool) -> str:
    """Static checks on a URL a user gave us; returns it normalised. ``UnsafeAddress``/``BadRequest``."""
    if len(url) > 2048:
        raise BadRequest("the ICS link is too long", field="url")
    parts = urlsplit(url.strip())
    allowed_schemes = ("https", "http", "webcal") if allow_loopback else ("https", "webcal")
    if parts.scheme.lower() not in allowed_schemes:
        raise BadRequest("the ICS link must start with https://", field="url")
    if not parts.hostname or parts.username or parts.password:
        raise BadRequest("the ICS link needs a host and no user name", field="url")
    scheme = "https" if parts.scheme.lower() == "webcal" else parts.scheme.lower()
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        literal = None
    if literal is not None and not address_allowed(literal, allow_loopback=allow_loopback):
        raise UnsafeAddress("the ICS link points to an address that is not allowed", field="url")
    return parts._replace(scheme=scheme).geturl()


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address, and connects only to a checked one."""

    def __init__(self, *, allow_loopback: bool) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_loopback = allow_loopback

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        import anyio

        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve host: {exc}") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not addresses or not all(address_allowed(a, allow_loopback=self._allow_loopback) for a in addresses):
            # All must pass: a name resolving to one public and one private address is refused.
            raise UnsafeAddress("the ICS link resolves to an address that is not allowed", field="url")
        return await self._inner.connect_tcp(str(addresses[0]), port, timeout=timeout,
                                             local_address=local_address, socket_options=socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx transport whose connection pool uses the guarded network backend.

    TLS still verifies the certificate against the original host name (httpcore passes the
    origin's host as SNI), so pinning the checked IP does not weaken HTTPS.
    """

    def __init__(self, *, allow_loopback: bool, verify: ssl.SSLContext | str | bool = True) -> None:
        super().__init__(verify=verify, trust_env=False)
        context = httpx.create_ssl_context(verify=verify, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(ssl_context=context, max_connections=10,
                                                  network_backend=_GuardedBackend(allow_loopback=allow_loopback))


@dataclass(frozen=True)
class FetchResult:
    status: int            # 200 or 304
    body: bytes
    etag: str
    last_modified: str


async def fetch_ics(url: str, *, etag: str = "", last_modified: str = "", allow_loopback: bool = False,
                    transport: httpx.AsyncBaseTransport | None = None, max_bytes: int = MAX_BYTES,
                    deadline: float | None = None) -> FetchResult:
    """Conditional GET with manual redirects (each hop re-checked), a size cap, per-read timeouts
    and one deadline for the whole fetch (httpx's timeouts are per read: a server sending a byte
    every few seconds never trips them)."""
    deadline = DEADLINE if deadline is None else deadline
    try:
        async with asyncio.timeout(deadline):
            return await _fetch(url, etag=etag, last_modified=last_modified, allow_loopback=allow_loopback,
                                transport=transport, max_bytes=max_bytes)
    except TimeoutError as exc:
        raise IcsLimitExceeded(f"the calendar host did not deliver the calendar within {deadline:g} s",
                               field="url", code="ics_fetch_deadline") from exc


class HttpIcsFetcher(IcsFetchPort):
    """The real ``IcsFetchPort``: ``fetch_ics`` over the guarded transport."""

    async def fetch(self, url: str, *, etag: str = "", last_modified: str = "",
                    allow_loopback: bool = False) -> FetchResult:
        return await fetch_ics(url, etag=etag, last_modified=last_modified, allow_loopback=allow_loopback)


async def _fetch(url: str, *, etag: str, last_modified: str, allow_loopback: bool,
                 transport: httpx.AsyncBaseTransport | None, max_bytes: int) -> FetchResult:
    current = check_url(url, allow_loopback=allow_loopback)
    headers = {"User-Agent": USER_AGENT, "Accept": "text/calendar, */*;q=0.5", "Accept-Encoding": "identity"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    transport = transport or GuardedTransport(allow_loopback=allow_loopback)
    async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT, follow_redirects=False,
                                 trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                async with client.stream("GET", current, headers=headers) as response:
                    if response.status_code in (301, 302, 303, 307, 308):
                        location = response.headers.get("Location", "")
                        current = check_url(str(response.url.join(location)), allow_loopback=allow_loopback)
                        continue
                    if response.status_code == 304:
                        return FetchResult(304, b"", etag, last_modified)
                    if response.status_code in (404, 410):
                        raise NotFound("the published calendar no longer exists (unpublished in Outlook?)")
                    if response.status_code >= 500 or response.status_code == 429:
                        raise TransientError(f"the calendar host answered {response.status_code}")
                    if response.status_code != 200:
                        raise BadRequest(f"the calendar host answered {response.status_code}", field="url")
                    declared = response.headers.get("Content-Length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise BadRequest("the published calendar is too large", field="url")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_raw():
                        size += len(chunk)
                        if size > max_bytes:
                            raise BadRequest("the published calendar is too large", field="url")
                        chunks.append(chunk)
                    return FetchResult(200, b"".join(chunks), response.headers.get("ETag", ""),
                                       response.headers.get("Last-Modified", ""))
            except httpx.TimeoutException as exc:
                raise TransientError("the calendar host did not answer in time") from exc
            except httpx.TransportError as exc:
                cause = exc.__cause__ or exc.__context__
                if isinstance(cause, UnsafeAddress):
                    raise cause from None
                raise TransientError(f"the calendar host could not be reached: {type(exc).__name__}") from exc
        raise BadRequest("the ICS link redirects too often", field="url")
