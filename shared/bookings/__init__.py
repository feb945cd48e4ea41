"""timum → Outlook: booking webhooks, the booking store, and the event writer.

``payload`` validates webhook bodies, ``plan`` decides (pure), ``render`` builds the event
text, ``store`` keeps each resource's bookings (the ICS feed reads them), ``service`` does I/O.
"""
