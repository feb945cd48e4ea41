"""The Graph webhooks alone, as a function app: what scenario 4 serves under load.

On Flex Consumption the HTTP triggers of an app scale as one group on their own instances,
apart from the queue-triggered workers; serving only the webhook blueprint reproduces that
instance without letting the workers compete for the benchmark machine's two cores.
"""

import azure.functions as func

from shared.http import graph_bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(graph_bp.bp)
