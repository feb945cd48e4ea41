"""A burst of sync messages for one link: the host takes up to 16 messages at once (host.json
``batchSize``), and the link's lease must let exactly one of them run a delta round while the
others only mark it dirty. Two rounds from the same delta link at once write pending rows under
the same round tag, and one round's settling deletes slots the other one just confirmed."""

from __future__ import annotations

from devtools.stack import Stack
from devtools.stack_world import bulk_links, event_times, gather_bounded, wait_quiet

MESSAGES = 16
#: one round for the holder, one more per dirty mark it finds, and a fresh message after the
#: engine's cap of five runs: anything above means rounds ran side by side
MAX_ROUNDS = 6


def test_one_link_never_runs_two_delta_rounds_at_once(stack: Stack) -> None:
    from shared.domain import slot_external_id
    from shared.messages import SYNC_QUEUE, SyncMessage, SyncReason

    behaviour = stack.graph.behaviour
    behaviour.empty_page_probability = behaviour.replay_probability = 0.0
    (link,) = bulk_links(stack, 1, provider="burst", subscribe=False)
    wait_quiet(stack, timeout=60)
    events = []
    for n in range(30):
        start, end = event_times(2 + n // 20, n)
        events.append(stack.graph.create_event(link.user.id, f"Termin {n}", start, end,
                                               calendar_id=link.calendar_id, show_as="busy"))
    seq = stack.request_seq()
    queue = stack.storage.queue(SYNC_QUEUE)
    message = SyncMessage(str(link.key), SyncReason.NOTIFICATION).to_json()
    stack.run(gather_bounded([lambda: queue.send(message) for _ in range(MESSAGES)]))
    wait_quiet(stack, timeout=120, settle=2.0)

    rounds = [e for e in stack.graph_requests(since_seq=seq, mailbox=link.user.mail) if "delta" in e.path]
    assert len(rounds) <= MAX_ROUNDS, f"{len(rounds)} delta requests for {MESSAGES} messages of one link"
    slots = {s.external_id for s in stack.timum.list_slots(link.provider, link.resource)}
    assert slots == {slot_external_id(link.key, ids.immutable_id) for ids in events}
