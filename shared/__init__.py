"""timum ↔ Microsoft 365 calendar sync (Azure Functions app package)."""

__version__ = "0.1.0"
