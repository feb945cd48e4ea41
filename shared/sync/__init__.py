"""A link's sync run: ``worker`` (lease, and the run for the link's mode) above the two runs —
Graph's (``shared.outlook.run``) and a published calendar's (``shared.ics.run``) — which
share the round machinery below both (``rounds``). Neither run imports the other."""
