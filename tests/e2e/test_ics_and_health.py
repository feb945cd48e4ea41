"""The ICS subscription feed and the health probe, served by the real function app."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx

from devtools.stack import Stack
from shared.domain import Customer
from shared.ics.feed import event_uid
from shared.ics.tokens import FeedTokenRepository
from tests.support.e2e import LOG, Names, berlin


def test_ics_feed_serves_bookings_with_etag_and_head(stack: Stack, names: Names) -> None:
    # No Outlook link at all: the feed is the alternative for practices without admin approval.
    stack.ensure_resource(names.provider, names.resource, "Raum ICS")
    token = stack.run(FeedTokenRepository(stack.storage).issue(names.key, "Raum ICS"))
    url = stack.api_url(f"ics/{token}")
    began = time.monotonic()
    first = stack.timum.make_booking(names.provider, names.resource, berlin(26, 9), duration=timedelta(minutes=30),
                                     service_name="Krankengymnastik", customer=Customer("Jürgen Schäfer"))

    with httpx.Client(timeout=15) as client:
        def feed_with(uid: str) -> httpx.Response | None:
            response = client.get(url)
            return response if response.status_code == 200 and uid in response.text else None

        answer = stack.wait_for(lambda: feed_with(event_uid(first.id)), what="booking in the feed")
        LOG.info("lag booking → ICS feed: %.2f s", time.monotonic() - began)
        assert answer.headers["content-type"].startswith("text/calendar")
        assert "charset=utf-8" in answer.headers["content-type"].lower()
        assert "content-encoding" not in answer.headers
        body = answer.text
        assert body.startswith("BEGIN:VCALENDAR")
        assert "METHOD:PUBLISH" in body and "X-WR-CALNAME:Raum ICS" in body
        assert body.count("BEGIN:VEVENT") == 1
        assert "Krankengymnastik" in body
        etag = answer.headers["etag"]
        assert etag.startswith('"')  # strong

        unchanged = client.get(url, headers={"If-None-Match": etag})
        assert unchanged.status_code == 304
        assert unchanged.content == b""

        head = client.head(url)
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) == len(answer.content)
        assert head.headers["etag"] == etag

        # A new booking changes the feed and its ETag; the old validator no longer matches.
        second = stack.timum.make_booking(names.provider, names.resource, berlin(27, 9), service_name="Massage")
        changed = stack.wait_for(lambda: feed_with(event_uid(second.id)), what="second booking in the feed")
        assert changed.headers["etag"] != etag
        assert changed.text.count("BEGIN:VEVENT") == 2
        assert client.get(url, headers={"If-None-Match": etag}).status_code == 200

        # Cancelled bookings leave the feed.
        stack.timum.cancel_booking(first.id)
        stack.wait_for(lambda: (r := client.get(url)).status_code == 200 and event_uid(first.id) not in r.text,
                       what="cancelled booking gone from the feed")

        assert client.get(stack.api_url("ics/" + "x" * 43)).status_code == 404


def test_health_ok_then_503_while_storage_is_down(stack: Stack) -> None:
    with httpx.Client(timeout=60) as client:
        healthy = client.get(stack.api_url("health"))
        assert healthy.status_code == 200
        assert healthy.json()["status"] == "ok"
        assert healthy.headers["cache-control"] == "no-store"

        with stack.storage_outage():
            down = client.get(stack.api_url("health"))
            assert down.status_code == 503
            assert down.json()["storage"] == "unreachable"

        def healthy_again() -> httpx.Response | None:
            answer = client.get(stack.api_url("health"))
            return answer if answer.status_code == 200 else None

        back = stack.wait_for(healthy_again, what="healthy again")
        assert back.json()["storage"] == "ok"
