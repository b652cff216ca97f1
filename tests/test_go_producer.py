"""The Go producer example (examples/go-producer) against a real worker: the wire contract of
docs/producing.md, from a Go gateway's side.

The example is built with the machine's Go toolchain (modules from the Go module proxy on the
first build, from the module cache after that), publishes to a fresh topic on the session
broker, and a real worker must count exactly what it reports as delivered, with nothing
dead-lettered.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from consumer.keys.attributes import attribute_key
from consumer.pipeline.validate import FastUsageEvent, decode_fast
from tests.conftest import TopicFactory
from tests.harness import (
    WorkerProcess,
    committed_offsets,
    end_offsets,
    expected_series,
    total,
    usage_series,
)

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "go-producer"
COUNT = 2000
PARTITIONS = 3
MAX_MESSAGE_BYTES = 65536  # the worker's default max_message_bytes


def _go() -> str:
    found = shutil.which("go")
    if found is None and Path("/usr/local/go/bin/go").is_file():
        found = "/usr/local/go/bin/go"
    if found is None:
        pytest.fail(
            "the Go toolchain is needed to build examples/go-producer: no `go` on PATH nor at "
            "/usr/local/go/bin/go. Install Go (at least the version in "
            "examples/go-producer/go.mod's `go` line) and put it on PATH."
        )
    return found


def _go_env() -> dict[str, str]:
    # Never fetch another toolchain: use the machine's (an older one fails on go.mod's line).
    return {**os.environ, "GOTOOLCHAIN": "local", "GOWORK": "off", "CGO_ENABLED": "0"}


@pytest.fixture(scope="module")
def go_producer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example, built into a temporary directory; go.mod and go.sum must be complete."""
    binary = tmp_path_factory.mktemp("go-producer") / "go-producer"
    command = [_go(), "build", "-mod=readonly", "-buildvcs=false", "-o", str(binary)]
    env = _go_env()
    started = time.monotonic()
    built = subprocess.run(
        [*command, "."],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"`{' '.join(command)} .` in {EXAMPLE} failed:\n{built.stderr}")
    print(f"go build: {time.monotonic() - started:.1f} s")  # shown with -s or on failure
    return binary


def test_go_vet_and_gofmt_clean(go_producer: Path) -> None:
    """The example stays idiomatic: `go vet` finds nothing, `gofmt` would change nothing."""
    go = _go()
    vet = subprocess.run(
        [go, "vet", "-mod=readonly", "./..."],
        cwd=EXAMPLE,
        env=_go_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert vet.returncode == 0, vet.stderr
    gofmt = subprocess.run(
        [str(Path(go).resolve().with_name("gofmt")), "-l", "."],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert gofmt.returncode == 0, gofmt.stderr
    assert gofmt.stdout == "", f"not gofmt-formatted: {gofmt.stdout}"


def _publish(binary: Path, bootstrap: str, topic: str, seed: int, events_path: Path) -> Any:
    """Runs the example; returns its report after checking it delivered everything."""
    ran = subprocess.run(
        [
            str(binary),
            "-brokers",
            bootstrap,
            "-topic",
            topic,
            "-count",
            str(COUNT),
            "-seed",
            str(seed),
            "-events",
            str(events_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert report["topic"] == topic
    assert report["events"] == COUNT
    assert report["failed"] == 0
    return report


def _by_model(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report's per-model totals, recomputed from the events themselves."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        key = (e["provider"], e["model"])
        row = rows.setdefault(
            key,
            {
                "provider": e["provider"],
                "model": e["model"],
                "events": 0,
                "errors": 0,
                "input_tokens": 0,
                "output_tokens": 0,
            },
        )
        row["events"] += 1
        row["errors"] += e["status"] == "error"
        row["input_tokens"] += e.get("input_tokens", 0)
        row["output_tokens"] += e.get("output_tokens", 0)
    return [rows[key] for key in sorted(rows)]


def _keys_on_topic(
    bootstrap: str, topic: str
) -> tuple[dict[bytes, bytes | None], dict[bytes | None, set[int]]]:
    """Every message's key by its value, and the partitions each key was found on."""
    ends = end_offsets(bootstrap, topic, PARTITIONS)
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"keys-{topic}"})
    keys: dict[bytes, bytes | None] = {}
    partitions_of: dict[bytes | None, set[int]] = {}
    try:
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        deadline = time.monotonic() + 60
        while len(keys) < sum(ends.values()) and time.monotonic() < deadline:
            for msg in reader.consume(500, timeout=0.5):
                assert msg.error() is None, msg.error()
                keys[msg.value() or b""] = msg.key()
                partitions_of.setdefault(msg.key(), set()).add(int(msg.partition() or 0))
    finally:
        reader.close()
    return keys, partitions_of


def test_worker_counts_exactly_what_the_go_producer_delivered(
    go_producer: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    group_id: str,
    tmp_path: Path,
) -> None:
    topic = topic_factory(PARTITIONS)
    events_path = tmp_path / "events.jsonl"
    report = _publish(go_producer, kafka_bootstrap, topic, 42, events_path)

    # The program's own account: one line per delivered event, the exact bytes it sent.
    lines = events_path.read_bytes().splitlines()
    events = [json.loads(line) for line in lines]
    assert len(events) == COUNT
    assert len({e["event_id"] for e in events}) == COUNT
    assert report["models"] == _by_model(events)
    assert report["input_tokens"] == sum(e.get("input_tokens", 0) for e in events)
    assert report["output_tokens"] == sum(e.get("output_tokens", 0) for e in events)
    # Valid by the consumer's own rules, and on its fast path (no fallback to the model).
    assert all(isinstance(decode_fast(line, MAX_MESSAGE_BYTES), FastUsageEvent) for line in lines)
    # The mix covers every status, so the error and canceled paths are exercised too.
    assert {e["status"] for e in events} == {"success", "error", "canceled"}

    # Exactly COUNT messages on the topic (no duplicates from retries), spread over every
    # partition, each keyed by its attribute set exactly as the consumer defines the key (the
    # Go program computes it itself), and each set on one partition only.
    ends = end_offsets(kafka_bootstrap, topic, PARTITIONS)
    assert sum(ends.values()) == COUNT
    assert all(end > 0 for end in ends.values()), ends
    keys, partitions_of = _keys_on_topic(kafka_bootstrap, topic)
    assert keys == {line: attribute_key(json.loads(line)) for line in lines}
    assert all(len(partitions) == 1 for partitions in partitions_of.values())

    worker = WorkerProcess(kafka_bootstrap, topic, group_id, tmp_path, "--batch-wait-ms", "50")
    worker.start()
    worker.wait_ready()
    worker.wait_for(
        lambda: total(worker.scrape(), "usage_consumer_messages_consumed_total") == COUNT,
        60,
        "done reading the topic",
    )
    series = worker.scrape()

    # Series by series, what the worker exported is what these events must yield...
    assert usage_series(series) == expected_series(events)
    # ...and per provider and model it is what the program reported.
    for row in report["models"]:
        match = {"llm_provider": row["provider"], "llm_model": row["model"]}
        assert total(series, "llm_request_count_total", **match) == row["events"]
        assert total(series, "llm_request_errors_total", **match) == row["errors"]
        assert total(series, "llm_token_usage_input_total", **match) == row["input_tokens"]
        assert total(series, "llm_token_usage_output_total", **match) == row["output_tokens"]
    assert total(series, "llm_request_count_total") == COUNT
    assert total(series, "llm_token_usage_input_total") == report["input_tokens"]
    assert total(series, "llm_token_usage_output_total") == report["output_tokens"]
    assert total(series, "usage_consumer_events_recorded_total") == COUNT

    # Nothing rejected, nothing on the dead-letter topic.
    assert total(series, "usage_consumer_messages_rejected_total") == 0
    assert total(series, "usage_consumer_dead_letters_total") == 0
    assert end_offsets(kafka_bootstrap, f"{topic}.dlq", 1) == {0: 0}

    # The scrape covered everything, so the group commits up to the end of every partition.
    worker.wait_for(
        lambda: committed_offsets(kafka_bootstrap, group_id, topic, PARTITIONS) == ends,
        30,
        "committed to the end",
    )
    assert worker.stop() == 0


def test_same_seed_same_events(
    go_producer: Path, kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    """-seed makes a run repeatable: the same events (but for occurred_at), the same report."""
    first_topic, second_topic = topic_factory(1, with_dlq=False), topic_factory(1, with_dlq=False)
    first = _publish(go_producer, kafka_bootstrap, first_topic, 7, tmp_path / "first.jsonl")
    second = _publish(go_producer, kafka_bootstrap, second_topic, 7, tmp_path / "second.jsonl")
    other = _publish(go_producer, kafka_bootstrap, second_topic, 8, tmp_path / "other.jsonl")

    def events(name: str) -> list[dict[str, Any]]:
        lines = (tmp_path / name).read_text().splitlines()
        return [{**json.loads(line), "occurred_at": None} for line in lines]

    assert {**first, "topic": None} == {**second, "topic": None}
    assert events("first.jsonl") == events("second.jsonl")
    assert first["models"] != other["models"]
    assert {e["event_id"] for e in events("first.jsonl")}.isdisjoint(
        e["event_id"] for e in events("other.jsonl")
    )
