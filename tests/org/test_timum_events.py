"""The ``organisation.status_changed`` event the service sends matches ``docs/timum-api.yaml``, and
the sandbox timum takes it: every listed resource shows the new status."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from devtools.sandbox.timum.harness import RunningTimum, serve_timum
from devtools.sandbox.timum.seed import ANNA_WEBER, SONNENSCHEIN
from shared.adapters.timum_http import ORG_STATUS_EVENT, org_status_body
from shared.signing import SIGNATURE_HEADER, sign_webhook
from tests.support.timum_spec import check, load_spec


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return load_spec()


def test_the_event_matches_the_schema(spec: dict[str, Any]) -> None:
    event = org_status_body({"type": ORG_STATUS_EVENT, "id": "os-1", "data": {
        "providerId": "prov-1", "status": "needs_reconnect", "reason": "Zugriff entzogen",
        "resourceIds": ["res-1", "res-2"]}}, now=time.time())
    check(spec, "/components/schemas/OrganisationStatusEvent", event)
    with pytest.raises(Exception, match="resourceIds"):
        org_status_body({"type": ORG_STATUS_EVENT, "data": {"providerId": "p", "status": "ok",
                                                            "resourceIds": "res-1"}}, now=time.time())


def test_the_sandbox_timum_shows_it_on_every_listed_resource() -> None:
    with serve_timum(seed=True, webhook_retry_delays=()) as running:
        config = running.config
        assert isinstance(running, RunningTimum)
        event = org_status_body({"type": ORG_STATUS_EVENT, "id": "os-2", "data": {
            "providerId": SONNENSCHEIN, "status": "needs_reconnect", "reason": "Zugriff entzogen",
            "resourceIds": [ANNA_WEBER]}}, now=time.time())
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", "Timum-Delivery": "os-2",
                   SIGNATURE_HEADER: sign_webhook(body, [config.timum_webhook_secrets[0]], timestamp=int(time.time()))}
        response = httpx.post(running.status_webhook_url, content=body, headers=headers)
        assert response.status_code == 202, response.text
        link = running.state.resource(SONNENSCHEIN, ANNA_WEBER).link
        assert link is not None and link.status == "needs_reconnect"
