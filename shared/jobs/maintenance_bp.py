"""Housekeeping timers: expired sign-in state."""

from __future__ import annotations

import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.timer_trigger(schedule="0 17 * * * *", arg_name="timer", run_on_startup=False)
async def purge_expired_sign_in_state(timer: func.TimerRequest) -> None:
    """Hourly: drop expired connect nonces, auth flows and chooser sessions (they hold PKCE
    verifiers and session ids, so they should not outlive their TTL)."""
    from shared.connect.store import purge_expired
    from shared.wiring import get_storage

    removed = await purge_expired(get_storage())
    log.info("purged expired sign-in state: %s", removed)
