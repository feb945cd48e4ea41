"""The organisation path: one Microsoft 365 administrator connects a practice's people and rooms.

``permissions`` what we ask for on each path, with readable names and reasons
``store``       which tenant is connected for which provider; the mapping job's per-row state
``directory``   the tenant's people, rooms and their calendars (app-only Graph, paged)
``service``     sign-in, admin consent, the mapping page and the bulk link
``adopt``       existing delegated links of a connected tenant move to app-only push
``revoke``      consent withdrawn or app deleted: every link of the tenant needs a reconnect
"""
