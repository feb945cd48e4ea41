"""Service functions: what the triggers call. Each takes a ``Services`` and plain messages.

* ``subscriptions`` — Graph subscriptions, their upkeep, link set-up and teardown.
* ``notifications`` — the Graph webhooks' verify-and-enqueue step.
* ``slot_writes``   — blocked-slot writes shared by the Outlook and ICS runs.

The Outlook run lives in ``shared.outlook``, the ICS run in ``shared.ics``.
"""
