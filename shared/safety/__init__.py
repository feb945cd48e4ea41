"""Booking safety: the live conflict check, link freshness, conflict notices, reconnect reminders
and the provider's blocking rules as the API shows them."""
