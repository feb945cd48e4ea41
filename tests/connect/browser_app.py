"""A function app with only the connect blueprints (calendar chooser, organisation page), for the
browser tests: the real triggers, served by the local host, without queue workers or timers acting
on the side."""

import azure.functions as func

from shared.http import connect_bp, org_bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(connect_bp.bp)
app.register_functions(org_bp.bp)  # the organisation mapping page
