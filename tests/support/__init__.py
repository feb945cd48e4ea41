"""Helpers every test package shares: the one settings factory and the one builder of services over
the in-memory twins. Fixtures stay in conftest files; what they build lives here."""
