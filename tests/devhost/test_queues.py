"""Queue triggers and queue outputs against a real Azurite."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from devtools.devhost import Invocation, run_in_thread, serving
from tests.devhost.sample_app import Recorder, build_app, queue_blueprint
from tests.support.devhost import host_json

Queues = Callable[[str], QueueClient]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def job(tag: str, **extra: Any) -> str:
    return b64(json.dumps({"tag": tag, **extra}))


def drain(client: QueueClient) -> list[str]:
    """Everything now visible in a queue, removed from it; raw stored text."""
    texts = []
    for message in client.receive_messages(max_messages=32, visibility_timeout=30):
        texts.append(message.content)
        client.delete_message(message)
    return texts


def peek(client: QueueClient) -> list[str]:
    """Visible messages without taking them; a queue nobody wrote to yet does not exist and is empty."""
    try:
        return [m.content for m in client.peek_messages(max_messages=32)]
    except ResourceNotFoundError:
        return []


def records_of(records: list[Invocation], function: str) -> list[Invocation]:
    return [r for r in records if r.function == function]


def test_queue_message_reaches_the_function_with_its_metadata(rec: Recorder, storage_env: dict[str, str],
                                                              queues: Queues,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="devtools.devhost"), \
            serving(build_app(queue_blueprint(rec)), port=0, host_json=host_json(), env=storage_env) as host:
        work = queues(storage_env["DEVHOST_WORK_QUEUE"])
        sent = work.send_message(job("happy"))
        seen = rec.wait_for("work")[0]
        host.invocations.wait_for(lambda rs: len(records_of(rs, "work")) == 1, timeout=15)
    line = next(r.getMessage() for r in caplog.records if "Functions.work" in r.getMessage())
    assert "Succeeded" in line and "trigger=queue" in line and "dequeue_count=1" in line and "duration=" in line
    assert "happy" not in caplog.text  # message bodies stay out of the log
    assert seen["tag"] == "happy"
    assert seen["id"] == sent.id
    assert seen["dequeue_count"] == 1
    assert seen["insertion_time"] is not None and seen["expiration_time"] > seen["insertion_time"]
    assert seen["time_next_visible"] > seen["insertion_time"]
    assert seen["pop_receipt"]
    record = records_of(host.records(), "work")[0]
    assert (record.trigger, record.outcome, record.dequeue_count) == ("queue", "succeeded", 1)
    assert work.peek_messages(max_messages=32) == []  # deleted after success


def test_outputs_are_written_base64_after_success(rec: Recorder, storage_env: dict[str, str],
                                                  queues: Queues) -> None:
    with serving(build_app(queue_blueprint(rec)), port=0, host_json=host_json(), env=storage_env) as host:
        queues(storage_env["DEVHOST_WORK_QUEUE"]).send_message(job("out"))
        host.invocations.wait_for(lambda rs: any(r.function == "work" for r in rs), timeout=15)
    texts = drain(queues(storage_env["DEVHOST_OUT_QUEUE"]))
    assert sorted(base64.b64decode(t).decode() for t in texts) == ["out-a", "out-b"]


def test_failed_message_is_retried_after_the_visibility_timeout(rec: Recorder, storage_env: dict[str, str],
                                                               queues: Queues) -> None:
    with serving(build_app(queue_blueprint(rec)), port=0, host_json=host_json(), env=storage_env) as host:
        queues(storage_env["DEVHOST_WORK_QUEUE"]).send_message(job("retry", fail_times=1))
        records = host.invocations.wait_for(lambda rs: len(records_of(rs, "work")) == 2, timeout=20)
    first, second = records_of(records, "work")
    assert (first.outcome, first.dequeue_count) == ("failed", 1)
    assert (second.outcome, second.dequeue_count) == ("succeeded", 2)
    # visibilityTimeout is 1 s: the message stays hidden that long after the failure.
    seen = rec.items("work-concurrency-end")
    retry_start = rec.items("work")[1]["at"]
    assert retry_start - seen[0]["at"] >= 0.8
    assert sorted(base64.b64decode(t).decode() for t in drain(queues(storage_env["DEVHOST_OUT_QUEUE"]))) == [
        "retry-a", "retry-b"]


def test_message_moves_to_poison_after_max_dequeue_count(rec: Recorder, storage_env: dict[str, str],
                                                         queues: Queues) -> None:
    queue_name = storage_env["DEVHOST_WORK_QUEUE"]
    text = job("poison", fail_times=99)
    with serving(build_app(queue_blueprint(rec)), port=0, host_json=host_json(maxDequeueCount=2),
                 env=storage_env) as host:
        queues(queue_name).send_message(text)
        poison = queues(queue_name + "-poison")
        records = host.invocations.wait_for(lambda rs: len(records_of(rs, "work")) == 2, timeout=20)
        poisoned = _wait_for_messages(poison, 1)
    assert [(r.outcome, r.dequeue_count) for r in records_of(records, "work")] == [("failed", 1), ("failed", 2)]
    assert poisoned == [text]  # the stored text, unchanged
    assert queues(queue_name).peek_messages(max_messages=32) == []
    assert peek(queues(storage_env["DEVHOST_OUT_QUEUE"])) == []  # no output from failed attempts


def test_message_that_is_not_base64_goes_straight_to_poison(rec: Recorder, storage_env: dict[str, str],
                                                            queues: Queues) -> None:
    queue_name = storage_env["DEVHOST_WORK_QUEUE"]
    with serving(build_app(queue_blueprint(rec)), port=0, host_json=host_json(), env=storage_env) as host:
        queues(queue_name).send_message("{not base64}")
        poisoned = _wait_for_messages(queues(queue_name + "-poison"), 1)
        assert records_of(host.records(), "work") == []
    assert poisoned == ["{not base64}"]
    assert rec.items("work") == []


def test_message_encoding_none_reads_and_writes_plain_text(rec: Recorder, storage_env: dict[str, str],
                                                           queues: Queues) -> None:
    with serving(build_app(queue_blueprint(rec)), port=0, host_json=host_json(messageEncoding="none"),
                 env=storage_env) as host:
        queues(storage_env["DEVHOST_WORK_QUEUE"]).send_message(json.dumps({"tag": "plain"}))
        queues(storage_env["DEVHOST_TEXT_QUEUE"]).send_message("Grüße")
        host.invocations.wait_for(lambda rs: {"work", "text_work"} <= {r.function for r in rs}, timeout=15)
    assert sorted(drain(queues(storage_env["DEVHOST_OUT_QUEUE"]))) == ["plain-a", "plain-b"]
    assert rec.items("text")[0]["text"] == "Grüße"


def test_str_annotated_sync_trigger_gets_decoded_text_in_a_worker_thread(
        rec: Recorder, storage_env: dict[str, str], queues: Queues) -> None:
    with serving(build_app(queue_blueprint(rec)), port=0, host_json=host_json(), env=storage_env):
        queues(storage_env["DEVHOST_TEXT_QUEUE"]).send_message(b64("Termin 9:30"))
        seen = rec.wait_for("text")[0]
    assert seen["text"] == "Termin 9:30"
    assert seen["thread"].startswith("devhost-fn")


def test_http_function_output_is_delivered_only_on_success(rec: Recorder, storage_env: dict[str, str],
                                                           queues: Queues) -> None:
    out = queues(storage_env["DEVHOST_OUT_QUEUE"])
    with serving(build_app(queue_blueprint(rec)), port=0, host_json=host_json(), env=storage_env) as host, \
            httpx.Client(base_url=host.base_url, timeout=10) as client:
        failed = client.post("/api/enqueue", content="nicht senden", params={"fail": "1"})
        assert failed.status_code == 500
        # Outputs are written before the response is sent, so nothing can still be on its way.
        assert peek(out) == []
        accepted = client.post("/api/enqueue", content="Buchung 42")
        assert accepted.status_code == 202
        assert [base64.b64decode(t).decode() for t in drain(out)] == ["Buchung 42"]


def test_queues_are_created_when_missing(rec: Recorder, storage_env: dict[str, str], queues: Queues) -> None:
    work = queues(storage_env["DEVHOST_WORK_QUEUE"])

    def names() -> set[str]:
        return {q.name for q in _service(work).list_queues()}

    assert storage_env["DEVHOST_WORK_QUEUE"] not in names()
    with serving(build_app(queue_blueprint(rec)), port=0, host_json=host_json(), env=storage_env):
        assert {storage_env["DEVHOST_WORK_QUEUE"], storage_env["DEVHOST_TEXT_QUEUE"]} <= names()


def test_batch_size_and_threshold_bound_concurrency(rec: Recorder, storage_env: dict[str, str],
                                                    queues: Queues) -> None:
    work = queues(storage_env["DEVHOST_WORK_QUEUE"])
    work.create_queue()
    for i in range(6):
        work.send_message(job(f"b{i}", sleep=0.3))
    # At most batchSize + newBatchThreshold messages run at once (2 + 0 here).
    with serving(build_app(queue_blueprint(rec)), port=0, host_json=host_json(batchSize=2, newBatchThreshold=0),
                 env=storage_env) as host:
        host.invocations.wait_for(lambda rs: len(records_of(rs, "work")) == 6, timeout=30)
    running, peak = 0, 0
    events = sorted(rec.items("work-concurrency-start") + rec.items("work-concurrency-end"), key=lambda e: e["at"])
    for event in events:
        running += 1 if event["kind"] == "work-concurrency-start" else -1
        peak = max(peak, running)
    assert peak == 2
    assert sorted(e["tag"] for e in rec.items("work")) == [f"b{i}" for i in range(6)]


def test_admin_api_runs_a_queue_function_without_storage_round_trip(rec: Recorder, storage_env: dict[str, str],
                                                                     queues: Queues) -> None:
    with serving(build_app(queue_blueprint(rec)), port=0, host_json=host_json(), env=storage_env) as host:
        response = httpx.post(f"{host.base_url}/admin/functions/text_work", json={"input": "direkt"},
                              headers={"x-functions-key": storage_env["MASTER_KEY"]}, timeout=10)
        assert response.status_code == 202
        assert rec.wait_for("text")[0]["text"] == "direkt"


def test_shutdown_lets_a_running_message_finish(rec: Recorder, storage_env: dict[str, str],
                                                queues: Queues) -> None:
    host = run_in_thread(build_app(queue_blueprint(rec)), port=0, host_json=host_json(), env=storage_env)
    queues(storage_env["DEVHOST_WORK_QUEUE"]).send_message(job("drain", sleep=0.5))
    rec.wait_for("work-concurrency-start")
    host.stop()
    assert [r.outcome for r in host.records("work")] == ["succeeded"]
    assert peek(queues(storage_env["DEVHOST_WORK_QUEUE"])) == []
    assert len(drain(queues(storage_env["DEVHOST_OUT_QUEUE"]))) == 2


def test_shutdown_past_its_bound_hands_the_message_back(rec: Recorder, storage_env: dict[str, str],
                                                        queues: Queues) -> None:
    host = run_in_thread(build_app(queue_blueprint(rec)), port=0, host_json=host_json(), env=storage_env,
                         shutdown_timeout=0.3)
    text = job("too-slow", sleep=30)
    queues(storage_env["DEVHOST_WORK_QUEUE"]).send_message(text)
    rec.wait_for("work-concurrency-start")
    host.stop()
    assert [r.outcome for r in host.records("work")] == ["cancelled"]
    # Visible again at once rather than after the ten-minute fetch lease.
    assert peek(queues(storage_env["DEVHOST_WORK_QUEUE"])) == [text]
    assert peek(queues(storage_env["DEVHOST_OUT_QUEUE"])) == []


def _service(client: QueueClient) -> Any:
    from azure.storage.queue import QueueServiceClient

    return QueueServiceClient(account_url=client.url.rsplit("/", 1)[0], credential=client.credential)


def _wait_for_messages(client: QueueClient, count: int, timeout: float = 15.0) -> list[str]:
    """Poll a queue we do not own until ``count`` messages are visible (peek does not hide them)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = peek(client)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{client.queue_name}: {len(found)} of {count} messages after {timeout} s")
        time.sleep(0.05)
