"""Service functions: what the triggers call. Each takes a ``Services`` and plain messages.

* ``outlook_sync``  — Outlook → timum delta engine (``run_sync``).
* ``subscriptions`` — Graph subscriptions, their upkeep, link set-up and teardown.
* ``notifications`` — the Graph webhooks' verify-and-enqueue step.
"""
