"""Timer of booking safety: the link watch (stale / fresh, conflict / resolved, reconnect reminders)."""

from __future__ import annotations

import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", run_on_startup=False)
async def watch_links(timer: func.TimerRequest) -> None:
    """Every 5 minutes: tell timum about links that fell behind or caught up, and remind it of
    links that still need a reconnect."""
    from shared.safety.watch import sweep
    from shared.wiring import get_services

    outcome = await sweep(get_services())
    log.info("link watch: %d links, %d stale, %d fresh, %d reminders, %d conflicts, %d resolved, %d failed",
             outcome.links, outcome.stale, outcome.fresh, outcome.reminders, outcome.conflicts, outcome.resolved,
             len(outcome.failed))
