"""Replay: a backfill from a timestamp or an offset, on a real broker with real workers."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from consumer.devtools.produce import synthetic_events
from consumer.errors import UsageConsumerError
from consumer.kafka import replay
from consumer.pipeline.deadletter import DeadLetter
from consumer.pipeline.validate import Reason, Rejection
from tests.conftest import TopicFactory
from tests.harness import WorkerProcess, committed_offsets, end_offsets, total

pytestmark = pytest.mark.integration

PARTITIONS = 3


def _produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    # Round robin: every partition gets events, so every one has a committed offset to compare
    # (an unkeyed producer may leave one empty, and an empty partition is never committed).
    for n, event in enumerate(events):
        producer.produce(topic, json.dumps(event).encode(), partition=n % PARTITIONS)
    assert producer.flush(30) == 0


def _drain(worker: WorkerProcess, bootstrap: str, group: str, topic: str) -> float:
    """Scrape until the group committed everything; the last scrape's request count."""
    ends = end_offsets(bootstrap, topic, PARTITIONS)
    worker.wait_for(
        lambda: worker.scrape() and committed_offsets(bootstrap, group, topic, PARTITIONS) == ends,
        60,
        "committed to the end",
    )
    return total(worker.scrape(), "llm_request_count_total")


def test_replay_from_a_timestamp_recounts_exactly_what_came_after_it(
    kafka_bootstrap: str,
    admin: AdminClient,
    topic_factory: TopicFactory,
    group_id: str,
    tmp_path: Path,
) -> None:
    topic = topic_factory(PARTITIONS)
    before, after = list(synthetic_events(120, seed=31)), list(synthetic_events(80, seed=32))
    _produce(kafka_bootstrap, topic, before)
    time.sleep(0.05)
    since_ms = int(time.time() * 1000)
    time.sleep(0.05)
    _produce(kafka_bootstrap, topic, after)

    first = WorkerProcess(kafka_bootstrap, topic, group_id, tmp_path).start()
    assert _drain(first, kafka_bootstrap, group_id, topic) == len(before) + len(after)

    # A live member: Kafka would refuse, so replay refuses first, naming the cause.
    out = io.StringIO()
    with pytest.raises(UsageConsumerError, match=r"1 live member\(s\): stop the workers first"):
        replay.run(admin, group_id, topic, out, lambda _: True, from_timestamp_ms=since_ms)
    assert first.stop() == 0

    # Declined: the plan is shown, nothing moves.
    ends = end_offsets(kafka_bootstrap, topic, PARTITIONS)
    declined = replay.run(admin, group_id, topic, out, lambda _: False, from_timestamp_ms=since_ms)
    assert declined == 1
    assert out.getvalue().endswith("nothing changed\n")
    assert committed_offsets(kafka_bootstrap, group_id, topic, PARTITIONS) == ends

    plan = replay.make_plan(admin, group_id, topic, from_timestamp_ms=since_ms)
    assert sum(row.replayed for row in plan) == len(after)
    assert [row.committed for row in plan] == [ends[p] for p in range(PARTITIONS)]

    # Confirmed: offsets move back, a new worker replays, the bar follows it to the end.
    progress = io.StringIO()
    result: list[int] = []
    questions: list[str] = []

    def confirm(question: str) -> bool:
        questions.append(question)
        return True

    thread = threading.Thread(
        target=lambda: result.append(
            replay.run(
                admin,
                group_id,
                topic,
                progress,
                confirm,
                from_timestamp_ms=since_ms,
                timeout_s=90,
            )
        )
    )
    thread.start()
    deadline = time.monotonic() + 30
    while "offsets reset" not in progress.getvalue() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert questions == [
        f"Reset group {group_id!r} and replay {len(after)} events (counted again by the workers)?"
    ]
    second = WorkerProcess(kafka_bootstrap, topic, group_id, tmp_path).start()
    # The new incarnation counts exactly the replayed events.
    assert _drain(second, kafka_bootstrap, group_id, topic) == len(after)
    thread.join(60)
    assert result == [0]
    lines = progress.getvalue().splitlines()
    assert lines[-1] == "replay complete"
    assert f"{len(after)} of {len(after)} events, lag 0" in lines[-2]
    assert second.stop() == 0


def test_replay_from_an_offset_is_clamped_to_the_log(
    kafka_bootstrap: str, admin: AdminClient, topic_factory: TopicFactory, group_id: str
) -> None:
    topic = topic_factory(PARTITIONS)
    _produce(kafka_bootstrap, topic, list(synthetic_events(60, seed=33)))
    ends = end_offsets(kafka_bootstrap, topic, PARTITIONS)
    plan = replay.make_plan(admin, group_id, topic, from_offset=10)
    assert [(r.partition, r.committed, r.target, r.end) for r in plan] == [
        (p, -1001, min(10, ends[p]), ends[p]) for p in range(PARTITIONS)
    ]
    replay.apply_plan(admin, group_id, topic, plan)
    assert committed_offsets(kafka_bootstrap, group_id, topic, PARTITIONS) == {
        p: min(10, ends[p]) for p in range(PARTITIONS)
    }
    assert replay.make_plan(admin, group_id, topic, from_offset=10**9)[0].replayed == 0


def test_the_plan_says_how_many_rejects_the_replay_dead_letters_again(
    kafka_bootstrap: str,
    admin: AdminClient,
    topic_factory: TopicFactory,
    group_id: str,
    tmp_path: Path,
) -> None:
    topic = topic_factory(PARTITIONS)
    events = list(synthetic_events(30, seed=35))
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    invalid = {4, 10, 17}  # round robin: partition 1 offsets 1 and 3, partition 2 offset 5
    for n, event in enumerate(events):
        value = b"not json" if n in invalid else json.dumps(event).encode()
        producer.produce(topic, value, partition=n % PARTITIONS)
    assert producer.flush(30) == 0
    worker = WorkerProcess(kafka_bootstrap, topic, group_id, tmp_path).start()
    assert _drain(worker, kafka_bootstrap, group_id, topic) == len(events) - len(invalid)
    assert worker.stop() == 0
    # Beside the worker's three letters: the same reject twice (a redo after a kill) and a letter
    # of another topic at the same position, neither counted.
    dlq_topic = f"{topic}.dlq"
    again = Rejection(Reason.INVALID_JSON, "again")
    for source in (topic, f"{topic}-other"):
        letter = DeadLetter(source, 2, 5, None, b"not json", [], 0, again)
        producer.produce(dlq_topic, letter.value, headers=letter.dlq_headers())
    assert producer.flush(30) == 0

    out = io.StringIO()
    questions: list[str] = []

    def decline(question: str) -> bool:
        questions.append(question)
        return False

    config = {"bootstrap.servers": kafka_bootstrap}
    declined = replay.run(
        admin,
        group_id,
        topic,
        out,
        decline,
        from_offset=2,
        dead_letter_topic=dlq_topic,
        consumer_config=config,
    )
    assert declined == 1
    lines = out.getvalue().splitlines()
    assert lines[-2:] == [
        f"dead letters: 2 of the replayed events were rejected before (partition 1: 1, "
        f"partition 2: 1); the replay writes them to {dlq_topic} again",
        "nothing changed",
    ]
    assert questions == [
        f"Reset group {group_id!r} and replay 24 events (counted again by the workers; "
        "2 rejects dead-lettered again)?"
    ]
    plan = replay.make_plan(admin, group_id, topic, from_offset=2)
    assert replay.rejects_again(config, dlq_topic, topic, plan) == {0: 0, 1: 1, 2: 1}
    assert replay.rejects_again(
        config, dlq_topic, topic, replay.make_plan(admin, group_id, topic, from_offset=0)
    ) == {0: 0, 1: 2, 2: 1}
    assert replay.render_rejects(dlq_topic, {0: 0, 1: 0, 2: 0}) == (
        f"dead letters: none of the replayed events is in {dlq_topic}\n"
    )


def test_replay_names_a_missing_topic(admin: AdminClient, group_id: str) -> None:
    with pytest.raises(UsageConsumerError, match="topic 'no-such-topic' does not exist"):
        replay.make_plan(admin, group_id, "no-such-topic", from_offset=0)


def test_the_replay_command_asks_then_follows_the_workers_to_the_end(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    topic = topic_factory(PARTITIONS)
    events = list(synthetic_events(50, seed=34))
    _produce(kafka_bootstrap, topic, events)
    first = WorkerProcess(kafka_bootstrap, topic, group_id, tmp_path).start()
    assert _drain(first, kafka_bootstrap, group_id, topic) == len(events)
    assert first.stop() == 0
    command = [
        sys.executable,
        "-m",
        "consumer",
        "replay",
        "--from-offset",
        "0",
        "--bootstrap-servers",
        kafka_bootstrap,
        "--topic",
        topic,
        "--group-id",
        group_id,
    ]
    # No terminal to ask on, no --yes: nothing is reset.
    refused = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().endswith("not a terminal to confirm on: pass --yes to reset")
    assert f"{len(events)}" in refused.stdout  # the plan was shown first
    ends = end_offsets(kafka_bootstrap, topic, PARTITIONS)
    assert committed_offsets(kafka_bootstrap, group_id, topic, PARTITIONS) == ends

    with subprocess.Popen(
        [*command, "--yes"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as replaying:
        deadline = time.monotonic() + 30
        while committed_offsets(kafka_bootstrap, group_id, topic, PARTITIONS) == ends:
            assert time.monotonic() < deadline, "the offsets were not reset"
            time.sleep(0.2)
        second = WorkerProcess(kafka_bootstrap, topic, group_id, tmp_path).start()
        assert _drain(second, kafka_bootstrap, group_id, topic) == len(events)
        output, _ = replaying.communicate(timeout=60)
    assert replaying.returncode == 0, output
    assert output.splitlines()[-1] == "replay complete"
    assert second.stop() == 0
