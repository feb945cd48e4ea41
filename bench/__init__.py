"""Benchmarks, the fault-injection soak and the endpoint fuzzer (not deployed).

``python -m bench`` (``make bench``) runs every scenario against the local stack and writes
``bench/results.md``; ``--quick`` uses small sizes, ``--only NAME`` picks scenarios. Figures are
printed, never asserted: the tests under ``tests/soak`` and ``tests/fuzz`` check correctness only.
"""
