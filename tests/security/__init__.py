"""Attacks on the running stack (local host, Azurite, sandbox): each test performs one and checks
that it fails with a clear answer and leaves nothing behind. See docs/SECURITY.md."""
