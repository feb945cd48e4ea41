"""The sandbox timum: the API of ``docs/timum-api.yaml``, signed booking webhooks to the service, a
receiver for its link-status webhooks, and pages with the buttons that start connecting Outlook."""

from devtools.sandbox.timum.sandbox import TimumSandbox
from devtools.sandbox.timum.state import TimumState

__all__ = ["TimumSandbox", "TimumState"]
