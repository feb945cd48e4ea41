"""The pure core of the Outlook → timum sync: decisions without I/O, clock or randomness.

* ``hashing``      — content hashes of normalised items (volatile fields dropped).
* ``window``       — the sync window and when it slides.
* ``outlook_plan`` — what to do in timum for one delta page, and the reconciliation of a full round.

Everything here takes its inputs as arguments (including "now"), so the same inputs always give
the same actions; the services around it do the reading and writing.
"""
