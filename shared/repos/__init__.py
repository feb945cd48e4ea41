"""Typed repositories over the storage port (``shared/storage``).

Written once over ``StoragePort``, so each works on Azure Tables and on the in-memory twin.
Table names and partition keys are chosen for the access paths; see docs/ARCHITECTURE.md.
"""
