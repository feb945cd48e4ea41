"""The sandbox timum asks the service right before it confirms a booking whether the linked
Outlook calendar has something in that time (``POST …/resources/{resource}/conflicts``), as
real timum would. A conflict refuses the booking with a clear message; a resource without a
linked calendar, or a service that cannot be reached, leaves the decision to the sandbox's own
check (its blocked slots), as timum would have to.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime

import httpx

from devtools.sandbox.config import SandboxConfig
from devtools.sandbox.timum.state import SandboxError

log = logging.getLogger(__name__)

#: the service's own budget is 1.5 s; a little more for the network
TIMEOUT_SECONDS = 3.0


async def check_outlook(config: SandboxConfig, provider_id: str, resource_id: str, start: datetime,
                        end: datetime) -> None:
    """Raise ``SandboxError(key="outlook_conflict")`` if the service reports a conflict."""
    from shared.connect.links_api import sign_api_request

    path = f"/api/providers/{provider_id}/resources/{resource_id}/conflicts"
    body = json.dumps({"start": start.isoformat(), "end": end.isoformat()}).encode()
    headers = sign_api_request("POST", path, provider_id, body, list(config.timum_webhook_secrets),
                               timestamp=int(time.time()))
    headers.update({"Content-Type": "application/json", "x-functions-key": config.service_function_key})
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as client:
            response = await client.post(config.service_base_url.rstrip("/") + path, content=body, headers=headers)
    except httpx.HTTPError as exc:
        log.warning("conflict check unreachable (%s); booking on the sandbox's own check", type(exc).__name__)
        return
    if response.status_code != 200:
        # 404: no linked calendar; anything else: the service could not answer.
        if response.status_code != 404:
            log.warning("conflict check answered %s; booking on the sandbox's own check", response.status_code)
        return
    answer = response.json()
    if not answer.get("free", True):
        raise SandboxError(f"the linked Outlook calendar is busy then ({len(answer.get('conflicts') or [])} "
                           f"conflicts, checkedLive={answer.get('checkedLive')})", key="outlook_conflict")
