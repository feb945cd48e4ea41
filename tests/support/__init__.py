"""Helpers the tests share: the one settings factory, the one builder of services over the twins,
and each package's world (what its fixtures build). Fixtures stay in conftest files; what they
build lives here (``tests/test_test_layout.py`` holds that rule)."""
