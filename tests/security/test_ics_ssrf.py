"""Attack: an ICS import URL that reaches inside the platform (#13 item 6). Only globally
routable addresses pass — an allow-list by construction (``is_global``), not a denylist: the
Azure wire server, 6to4 and Teredo wrappers of private IPv4, site-local IPv6 and IETF protocol
addresses were accepted before."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import httpcore
import pytest

from shared.errors import BadRequest
from shared.ics import api, fetch
from shared.ics.fetch import address_allowed, check_url, fetch_ics
from shared.repos.links import LinkRepository
from shared.storage import StoragePort
from tests.support.ics_world import KEY, services

REFUSED = [
    "168.63.129.16",            # Azure wire server (DNS, DHCP, health probes)
    "169.254.169.254",          # instance metadata
    "192.0.0.8",                # IETF protocol assignments (IPv4 dummy address)
    "192.0.0.170",              # NAT64 discovery
    "2002:c0a8:0101::1",        # 6to4 of 192.168.1.1
    "2002:0a00:0001::1",        # 6to4 of 10.0.0.1
    "2002:a9fe:a9fe::1",        # 6to4 of 169.254.169.254
    "::ffff:10.0.0.1",          # IPv4-mapped private
    "64:ff9b::a00:1",           # NAT64 of 10.0.0.1
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo wrapping 10.0.0.1
    "fec0::1",                  # deprecated site-local
    "fd00:ec2::254",            # unique local (AWS metadata over IPv6)
    "100.64.0.1",               # carrier-grade NAT
    "198.18.0.1",               # benchmarking
    "10.1.2.3", "172.16.0.1", "192.168.0.1", "127.0.0.1", "0.0.0.0", "::1", "::",
    "224.0.0.1", "ff02::1", "240.0.0.1", "255.255.255.255",
]
ALLOWED = ["8.8.8.8", "2001:4860:4860::8888", "2002:0808:0808::1", "::ffff:8.8.8.8", "192.0.0.9"]


@pytest.mark.parametrize("address", REFUSED)
def test_internal_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address), allow_loopback=False)


@pytest.mark.parametrize("address", ALLOWED)
def test_global_addresses_pass(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address), allow_loopback=False)


@pytest.mark.parametrize("address", ["168.63.129.16", "[2002:c0a8:101::1]", "[fec0::1]", "192.0.0.8"])
async def test_an_import_to_an_internal_literal_is_refused_and_nothing_stored(storage: StoragePort,
                                                                              address: str) -> None:
    with pytest.raises(BadRequest) as caught:
        check_url(f"https://{address}/calendar.ics", allow_loopback=False)
    assert caught.value.code == "ics_unsafe_address"
    svc = services(storage)
    with pytest.raises(BadRequest):
        await api.set_ics_import(svc, "p", "r", {"url": f"https://{address}/calendar.ics"})
    assert await LinkRepository(storage).get(KEY) is None


@pytest.mark.parametrize("resolved", ["168.63.129.16", "2002:c0a8:101::1", "fec0::1", "192.0.0.8"])
async def test_a_name_resolving_inside_is_refused_at_connect_time(monkeypatch: pytest.MonkeyPatch,
                                                                  resolved: str) -> None:
    """DNS rebinding: the name is checked where the connection is made, on the address it resolved to."""
    import anyio

    family = socket.AF_INET6 if ":" in resolved else socket.AF_INET

    async def resolve(host: str, port: int, **kw: Any) -> list[tuple[Any, ...]]:
        return [(family, socket.SOCK_STREAM, 6, "", (resolved, port))]

    connected: list[str] = []

    async def connect(self: object, host: str, port: int, **kw: Any) -> Any:
        connected.append(host)
        raise httpcore.ConnectError("the test network has no route there")

    monkeypatch.setattr(anyio, "getaddrinfo", resolve)
    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect)
    with pytest.raises(BadRequest) as caught:
        await fetch_ics("https://calendar.example.com/calendar.ics", allow_loopback=False)
    assert caught.value.code == "ics_unsafe_address" and connected == []
    assert fetch.UnsafeAddress.code == "ics_unsafe_address"
