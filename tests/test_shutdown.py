"""SIGTERM is bounded: a worker exits within handover_timeout_ms + 10 s whatever the broker or the
dead-letter topic does, and says what it could not commit.

Two ways a shutdown can hang on Kafka: the broker is gone (the final commit and leaving the group
wait on a coordinator that never answers), or the dead-letter topic is gone (dead letters that can
never be delivered hold their partitions). Each is set up for real, and the worker is timed from
SIGTERM to exit.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumer.app import SHUTDOWN_GRACE_S
from consumer.devtools import broker
from consumer.devtools.produce import synthetic_events
from tests.conftest import TopicFactory
from tests.harness import WorkerProcess, dump

pytestmark = pytest.mark.integration

HANDOVER_MS = 2000
BOUND_S = HANDOVER_MS / 1000 + SHUTDOWN_GRACE_S


def _produce(bootstrap: str, topic: str, count: int, invalid: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for event in synthetic_events(count, seed=5):
        producer.produce(topic, dump(event))
    for _ in range(invalid):
        producer.produce(topic, b"{not json")
    assert producer.flush(30) == 0


def _recorded(worker: WorkerProcess, count: int) -> bool:
    """From /status, which (unlike a scrape of /metrics) covers nothing: no commit follows."""
    status, body = worker.get("/status")
    return status == 200 and json.loads(body)["worker"]["events_recorded"] == count


def _committed(worker: WorkerProcess, offset: int) -> bool:
    status, body = worker.get("/status")
    return status == 200 and [p["committed"] for p in json.loads(body)["partitions"]] == [offset]


def _stop_timed(worker: WorkerProcess) -> tuple[int, float]:
    began = time.monotonic()
    code = worker.stop(signal.SIGTERM, timeout=BOUND_S + 20)
    return code, time.monotonic() - began


def test_sigterm_with_the_broker_gone_exits_in_time_naming_what_is_not_committed(
    own_broker: broker.BrokerInfo, tmp_path: Path
) -> None:
    topic = "shutdown-broker-gone"
    admin = AdminClient({"bootstrap.servers": own_broker.bootstrap})
    for future in admin.create_topics(
        [NewTopic(topic, 1, 1), NewTopic(f"{topic}.dlq", 1, 1)]
    ).values():
        future.result(timeout=30)
    worker = WorkerProcess(
        own_broker.bootstrap,
        topic,
        "shutdown-group",
        tmp_path,
        *("--handover-timeout-ms", str(HANDOVER_MS)),
    )
    worker.start().wait_ready()
    _produce(own_broker.bootstrap, topic, 50)
    worker.wait_for(lambda: _recorded(worker, 50), 60, "recording 50 events")
    worker.scrape()  # covers the 50: the worker commits them
    worker.wait_for(lambda: _committed(worker, 50), 30, "committing 50")
    _produce(own_broker.bootstrap, topic, 30)  # recorded, never scraped: never committable
    worker.wait_for(lambda: _recorded(worker, 80), 60, "recording 30 more")

    os.kill(own_broker.pid, signal.SIGKILL)
    code, took = _stop_timed(worker)

    assert took < BOUND_S, worker.log()
    log = worker.log()
    # Either the hand-over gives up on a scrape and the worker leaves, or the deadline ends it;
    # both say the 30 are not committed.
    # librdkafka's complaints about the dead broker come through the worker's logger, in its
    # format and held back as repeats (10 s window), never as raw `%3|...|FAIL|` lines.
    assert not [line for line in log.splitlines() if line.startswith("%")], log
    refused = Counter(
        line.split("FAIL [", 1)[1].split("]", 1)[0]  # per client (the consumer, the producer)
        for line in log.splitlines()
        if "consumer.kafka.librdkafka: FAIL" in line and "/bootstrap: Connect to" in line
    )
    # At most two per client in the 12 s: the first, and one after the 10 s window.
    assert all(count <= 2 for count in refused.values()), refused
    if code == 1:
        assert "shutdown did not finish within 12s (handover_timeout_ms + 10s): exiting" in log
        assert f"not committed: {topic}/0 committed 50, processed 80;" in log
    else:
        assert code == 0, log
        assert f"no scrape covered [('{topic}', 0)] within 2.0s" in log


def test_sigterm_with_the_dead_letter_topic_gone_exits_in_time(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    topic = topic_factory(1)
    worker = WorkerProcess(
        kafka_bootstrap,
        topic,
        group_id,
        tmp_path,
        *("--handover-timeout-ms", str(HANDOVER_MS), "--dlq-timeout-ms", "60000"),
    )
    worker.start().wait_ready()
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.delete_topics([f"{topic}.dlq"])[f"{topic}.dlq"].result(timeout=30)
    _produce(kafka_bootstrap, topic, 20, invalid=3)
    worker.wait_for(lambda: _recorded(worker, 20), 60, "recording 20 events")
    # Produced after the recording check so the invalid ones are surely read: wait for them.
    worker.wait_for(
        lambda: json.loads(worker.get("/status")[1])["dead_letters"]["rejected"] == 3,
        30,
        "rejecting 3",
    )

    code, took = _stop_timed(worker)

    assert took < BOUND_S, worker.log()
    assert code in (0, 1), worker.log()
    log = worker.log()
    assert "dead letters unacknowledged: not committed past" in log or (
        "shutdown did not finish within 12s" in log and f"{topic}/0 committed" in log
    ), log
