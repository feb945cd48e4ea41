"""Queue- and timer-triggered blueprints: the asynchronous half of the service."""
