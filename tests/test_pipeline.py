"""The whole pipeline on a real broker: a worker subprocess, its real /metrics, the real DLQ."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from consumer.devtools.produce import synthetic_events
from tests.conftest import TopicFactory
from tests.harness import (
    WorkerProcess,
    committed_offsets,
    end_offsets,
    expected_series,
    read_topic,
    total,
    usage_series,
)

pytestmark = pytest.mark.integration

MAX_BYTES = 2048

# (value, expected reason); each is sent to partition 0 between valid events.
INVALID: list[tuple[bytes | None, str]] = [
    (b"", "empty"),
    (None, "empty"),
    (b'\xff\xfe{"schema_version": 1}', "not_utf8"),
    (b'{"schema_version": 1, "event_id": ', "invalid_json"),
    (b"[1, 2, 3]", "not_an_object"),
    (
        json.dumps(
            {
                "schema_version": 2,
                "event_id": "v2",
                "occurred_at": "2026-01-01T00:00:00Z",
                "provider": "openai",
                "model": "gpt-4o",
                "status": "success",
            }
        ).encode(),
        "unsupported_schema_version",
    ),
    (
        json.dumps(
            {
                "schema_version": 1,
                "event_id": "tokens-as-string",
                "occurred_at": "2026-01-01T00:00:00Z",
                "provider": "openai",
                "model": "gpt-4o",
                "status": "success",
                "input_tokens": "12",
            }
        ).encode(),
        "schema_violation",
    ),
    (b'{"padding": "' + b"a" * (MAX_BYTES + 10) + b'"}', "too_large"),
]


def _produce(
    bootstrap: str, topic: str, events: list[dict[str, Any]], invalid: bool = False
) -> dict[int, tuple[bytes | None, bytes | None, str]]:
    """Publish the events (and the invalid corpus on partition 0); return invalid by offset."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    placed: dict[int, tuple[bytes | None, bytes | None, str]] = {}

    def remember(value: bytes | None, key: bytes, reason: str) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            assert err is None, err
            placed[msg.offset()] = (key, value, reason)

        return on_delivery

    bad = iter(INVALID if invalid else [])
    for n, event in enumerate(events):
        producer.produce(topic, json.dumps(event).encode(), key=event["event_id"].encode())
        if n % 25 == 0:
            item = next(bad, None)
            if item is not None:
                value, reason = item
                key = f"bad-{n}".encode()
                producer.produce(
                    topic,
                    value,
                    key=key,
                    partition=0,
                    headers=[("origin", b"test"), ("trace", b"\x00\x01")],
                    on_delivery=remember(value, key, reason),
                )
        producer.poll(0)
    assert producer.flush(30) == 0
    return placed


def test_exact_totals_dead_letters_commits_and_resume(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    partitions = 3
    topic = topic_factory(partitions)
    first = list(synthetic_events(600, seed=11))
    invalid = _produce(kafka_bootstrap, topic, first, invalid=True)
    assert len(invalid) == len(INVALID)

    args = ("--batch-size", "64", "--batch-wait-ms", "50", "--max-message-bytes", str(MAX_BYTES))
    worker = WorkerProcess(kafka_bootstrap, topic, group_id, tmp_path, *args).start()
    worker.wait_ready()
    worker.wait_for(
        lambda: (
            total(worker.scrape(), "usage_consumer_dead_letters_total") == len(INVALID)
            and total(worker.scrape(), "llm_request_count_total") == len(first)
        ),
        60,
        "done with the first stream",
    )
    scraped = worker.scrape()
    assert usage_series(scraped) == expected_series(first)
    for reason in {r for _, r in INVALID}:
        count = sum(1 for _, r in INVALID if r == reason)
        assert total(scraped, "usage_consumer_messages_rejected_total", reason=reason) == count
        assert total(scraped, "usage_consumer_dead_letters_total", reason=reason) == count
    assert total(scraped, "usage_consumer_messages_consumed_total") == len(first) + len(INVALID)
    assert total(scraped, "usage_consumer_events_recorded_total") == len(first)

    # The dead-letter topic holds each invalid message unchanged, with its reason and origin.
    letters = read_topic(kafka_bootstrap, f"{topic}.dlq")
    assert len(letters) == len(INVALID)
    for letter in letters:
        headers = dict(letter.headers())
        offset = int(headers["dlq.source.offset"])
        key, value, reason = invalid[offset]
        assert letter.key() == key
        assert letter.value() == value
        assert headers["origin"] == b"test"
        assert headers["trace"] == b"\x00\x01"
        assert headers["dlq.reason"] == reason.encode()
        assert headers["dlq.source.topic"] == topic.encode()
        assert headers["dlq.source.partition"] == b"0"
        assert headers["dlq.detail"]

    # Everything was recorded or dead-lettered, so every partition is committed to its end.
    ends = end_offsets(kafka_bootstrap, topic, partitions)
    worker.wait_for(
        lambda: committed_offsets(kafka_bootstrap, group_id, topic, partitions) == ends,
        30,
        "committed to the end",
    )

    assert worker.stop(signal.SIGTERM) == 0
    assert "left the group" in worker.log()

    # A new incarnation resumes from the committed offsets: it counts only the new events.
    second = list(synthetic_events(300, seed=12))
    _produce(kafka_bootstrap, topic, second)
    again = WorkerProcess(kafka_bootstrap, topic, group_id, tmp_path, *args).start()
    again.wait_for(
        lambda: total(again.scrape(), "llm_request_count_total") == len(second),
        60,
        "done with the second stream",
    )
    assert usage_series(again.scrape()) == expected_series(second)
    assert total(again.scrape(), "usage_consumer_dead_letters_total") == 0
    ends = end_offsets(kafka_bootstrap, topic, partitions)
    again.wait_for(
        lambda: committed_offsets(kafka_bootstrap, group_id, topic, partitions) == ends,
        30,
        "committed to the new end",
    )
    assert again.stop(signal.SIGINT) == 0


def test_produce_from_file_publishes_lines_verbatim(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic = topic_factory(1, with_dlq=False)
    lines = [b'{"a": 1}', b"not json at all", b"", b'{"emoji": "\xf0\x9f\x98\x80"}']
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "consumer",
            "produce",
            "--bootstrap-servers",
            kafka_bootstrap,
            "--topic",
            topic,
            "--from-file",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "delivered 4, failed 0" in result.stdout
    got = [m.value() or b"" for m in read_topic(kafka_bootstrap, topic)]
    assert got == lines
