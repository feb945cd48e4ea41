"""Outlook → timum: the run of a Graph link.

* ``run``         — ``run_outlook_once``: Graph port, mailbox id, delta rounds, 410 → a fresh round.
* ``mailbox_ids`` — links made with a mailbox address get its Graph object id on their first run.
"""
