"""The function app: one FunctionApp, one Blueprint per area. Wiring only — no logic here.

Where new functions go: see docs/ARCHITECTURE.md ("Adding a function").
"""

import azure.functions as func

from shared.http import booking_bp, connect_bp, graph_bp, health_bp, ics_bp, org_bp, safety_bp
from shared.jobs import booking_bp as booking_jobs
from shared.jobs import maintenance_bp, sync_bp
from shared.jobs import safety_bp as safety_jobs

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

for blueprint in (
    health_bp.bp,   # GET /api/health
    connect_bp.bp,  # connect link, Microsoft sign-in, calendar chooser, admin consent, links API
    org_bp.bp,      # organisation mapping page (one admin connects the whole practice)
    graph_bp.bp,    # Graph change + lifecycle notifications
    booking_bp.bp,  # timum booking webhook
    ics_bp.bp,      # per-resource ICS subscription feed
    sync_bp.bp,     # delta worker, link set-up/teardown, subscription renewal, polling
    booking_jobs.bp,  # booking changes → Outlook events
    maintenance_bp.bp,  # expired sign-in state
    safety_bp.bp,   # live conflict check before timum confirms a booking
    safety_jobs.bp,  # link watch: stale / fresh notices, reconnect reminders
):
    app.register_functions(blueprint)
