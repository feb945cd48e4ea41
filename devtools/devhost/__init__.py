"""A local Azure Functions host for the app (Core Tools cannot be installed here).

It serves a ``func.FunctionApp`` from the app's own metadata: HTTP triggers on a real HTTP server,
queue triggers polled from Azure Storage (Azurite locally) with host.json semantics, queue output
bindings and timer triggers. Not deployed. Run it with ``python -m devtools.devhost``; tests use
``run_in_thread`` / ``serving``.
"""

from devtools.devhost.config import ConfigError, DevHostError
from devtools.devhost.host import DevHost, HostHandle, run_in_thread, serving
from devtools.devhost.invoke import Invocation, InvocationLog

__all__ = ["ConfigError", "DevHost", "DevHostError", "HostHandle", "Invocation", "InvocationLog", "run_in_thread",
           "serving"]
