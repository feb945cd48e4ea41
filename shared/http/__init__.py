"""HTTP-triggered blueprints: each trigger parses input, calls one service, maps the result."""
