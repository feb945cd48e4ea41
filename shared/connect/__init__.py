"""Connecting an Outlook calendar to timum, and the credentials that keep it working.

* ``flow``        signed connect link → Microsoft sign-in (MSAL auth-code flow + PKCE) →
                  admin consent when the organisation requires it
* ``chooser``     the calendar chooser: link the link's resource or create one from a calendar
* ``credentials`` delegated (stored MSAL cache) and app-only credentials; ``RealGraphProvider``
* ``status``      link health changes and the link-status webhook to timum
* ``teardown``    ending a link now, and what the TEARDOWN worker finishes later
* ``links_api``   timum's management API for links and provider settings, with provider scope
* ``store``       short-lived flow state: nonces, pending sign-ins, chooser sessions

HTTP triggers live in ``shared/http/connect_bp.py``; pages in ``shared/templates``.
"""
