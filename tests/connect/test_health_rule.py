"""The one rule from a failure to link health (``health_for``): every worker asks it, so a Graph
403 means the same for the delta worker, the booking writer and the subscription worker."""

from __future__ import annotations

import pytest

from shared.connect.status import Remote, health_for
from shared.domain import LinkHealth
from shared.errors import (
    AuthError,
    BadRequest,
    Conflict,
    ConsentRequired,
    NeedsReconnect,
    NotFound,
    RemoteGone,
    StorageError,
    SyncError,
    SyncStateExpired,
    Throttled,
    TransientError,
)

AUTH = [NeedsReconnect("invalid_grant"), ConsentRequired("consent withdrawn"),
        AuthError("401 after a fresh token", code="graph_unauthorized"),
        AuthError("403 on the calendar", code="graph_forbidden")]


@pytest.mark.parametrize("remote", [Remote.GRAPH, Remote.ICS])
@pytest.mark.parametrize("exc", AUTH, ids=lambda e: e.code)
def test_any_auth_error_of_the_link_needs_a_reconnect(exc: SyncError, remote: Remote) -> None:
    verdict = health_for(exc, remote)
    assert verdict is not None and verdict.health is LinkHealth.NEEDS_RECONNECT
    assert verdict.reason.startswith(f"{exc.code}: ")


def test_timums_auth_error_is_our_api_key_and_retried() -> None:
    assert health_for(AuthError("401", code="timum_auth"), Remote.TIMUM) is None


@pytest.mark.parametrize(("remote", "code"), [(Remote.GRAPH, "calendar_gone"), (Remote.ICS, "ics_gone"),
                                              (Remote.TIMUM, "resource_gone")])
@pytest.mark.parametrize("exc", [RemoteGone("gone"), NotFound("not there")], ids=lambda e: e.code)
def test_gone_is_an_error_named_after_what_is_gone(exc: SyncError, remote: Remote, code: str) -> None:
    verdict = health_for(exc, remote)
    assert verdict is not None and verdict.health is LinkHealth.ERROR
    assert verdict.reason == f"{code}: {exc.message}"


@pytest.mark.parametrize("remote", list(Remote))
def test_a_bad_request_is_an_error_with_its_own_code(remote: Remote) -> None:
    verdict = health_for(BadRequest("refused", code="ics_too_large"), remote)
    assert verdict is not None and verdict.health is LinkHealth.ERROR
    assert verdict.reason == "ics_too_large: refused"


def test_a_conflict_is_the_links_only_when_timum_refuses() -> None:
    verdict = health_for(Conflict("resource archived"), Remote.TIMUM)
    assert verdict is not None and verdict.health is LinkHealth.ERROR
    assert health_for(Conflict("etag lost"), Remote.GRAPH) is None


@pytest.mark.parametrize("remote", list(Remote))
@pytest.mark.parametrize("exc", [TransientError("5xx"), Throttled("429", retry_after=3), StorageError("down"),
                                 SyncStateExpired("410"), ValueError("a bug")],
                         ids=lambda e: type(e).__name__)
def test_what_a_retry_or_the_caller_fixes_leaves_health_alone(exc: BaseException, remote: Remote) -> None:
    assert health_for(exc, remote) is None


def test_reasons_are_bounded() -> None:
    verdict = health_for(RemoteGone("x" * 2000), Remote.GRAPH)
    assert verdict is not None and len(verdict.reason) == 500
