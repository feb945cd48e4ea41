"""Logs and metrics of the function app, one concern per module.

* ``shared.observability.correlation`` — correlation ids: ``bind`` and ``current_ids``.
* ``shared.observability.redaction`` — what a log record may carry: secret redaction, escaped
  control characters, the bound ids appended to each message, quiet HTTP client loggers, and
  ``configure_logging`` that installs all of it for the process.
* ``shared.observability.metrics`` — ``METRICS``, the names operators alert on, and ``metrics``,
  which sends them to Application Insights or the log.

Import from the module that owns a name; this package re-exports nothing. Each module's import
cost stays at the standard library: they are imported on every cold start.
"""
