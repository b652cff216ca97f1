"""The hostile corpus (tests/corpus/hostile.json): every entry's exact verdict, offline and live.

The unit test runs each entry through `consumer.pipeline.validate.decode`. The integration test
sends the whole corpus, mixed with valid synthetic events, through one worker subprocess on a real
broker and checks that nothing crashes, stalls, is lost or is counted twice: every rejected entry is
dead-lettered exactly once, unchanged, with its reason; every accepted entry is counted exactly.
"""

from __future__ import annotations

import base64
import json
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from consumer.devtools.produce import synthetic_events
from consumer.pipeline.deadletter import TRUNCATED_VALUE_BYTES
from consumer.pipeline.validate import MAX_DETAIL_LENGTH, Reason, Rejection, decode
from schemas import UsageEventV1
from tests.conftest import TopicFactory
from tests.harness import (
    WorkerProcess,
    end_offsets,
    expected_series,
    read_topic,
    total,
    usage_series,
)

CORPUS_PATH = Path(__file__).parent / "corpus" / "hostile.json"
ACCEPTED = "accepted"


@dataclass(frozen=True)
class Entry:
    name: str
    expect: str
    note: str
    value: bytes | None
    fields: dict[str, Any]
    detail: str


def _value(raw: dict[str, Any]) -> bytes | None:
    if "parts" in raw:
        return b"".join(
            base64.b64decode(part["b64"], validate=True) * part.get("times", 1)
            for part in raw["parts"]
        )
    if raw["b64"] is None:
        return None
    return base64.b64decode(raw["b64"], validate=True)


def _load() -> tuple[int, list[Entry]]:
    doc = json.loads(CORPUS_PATH.read_text(encoding="utf-8"))
    entries = [
        Entry(
            name=raw["name"],
            expect=raw["expect"],
            note=raw["note"],
            value=_value(raw),
            fields=raw.get("fields", {}),
            detail=raw.get("detail", ""),
        )
        for raw in doc["entries"]
    ]
    return int(doc["max_bytes"]), entries


MAX_BYTES, CORPUS = _load()
INVALID = [e for e in CORPUS if e.expect != ACCEPTED]
VALID = [e for e in CORPUS if e.expect == ACCEPTED]


# --- offline --------------------------------------------------------------------------------


def test_corpus_is_well_formed() -> None:
    names = [e.name for e in CORPUS]
    assert len(names) == len(set(names)), "entry names must be unique"
    assert len(CORPUS) >= 40
    assert MAX_BYTES == 65_536
    assert CORPUS_PATH.stat().st_size < 2_000_000
    # Every reason the default settings can give (unknown_field needs unknown_fields=reject:
    # tests/test_validate.py).
    by_default = {r.value for r in Reason} - {Reason.UNKNOWN_FIELD.value}
    assert {e.expect for e in CORPUS} == {ACCEPTED, *by_default}
    for entry in CORPUS:
        assert entry.note, entry.name
        assert not (entry.fields and entry.expect != ACCEPTED), entry.name
        assert not (entry.detail and entry.expect == ACCEPTED), entry.name


@pytest.mark.parametrize("entry", CORPUS, ids=lambda e: e.name)
def test_decode_verdict(entry: Entry) -> None:
    outcome = decode(entry.value, max_bytes=MAX_BYTES)
    if entry.expect == ACCEPTED:
        assert isinstance(outcome, UsageEventV1), f"{entry.note}: {outcome}"
        dumped = outcome.model_dump(mode="json")
        for name, value in entry.fields.items():
            assert dumped[name] == value, name
        # An accepted event is all valid Unicode: it can be re-encoded for labels and logs.
        outcome.model_dump_json().encode("utf-8")
        return
    assert isinstance(outcome, Rejection), f"{entry.note}: accepted {outcome!r}"
    assert outcome.reason is Reason(entry.expect), f"{entry.note}: {outcome}"
    assert entry.detail in outcome.detail
    assert 0 < len(outcome.detail) <= MAX_DETAIL_LENGTH
    assert outcome.detail.isascii()
    assert outcome.detail.isprintable()


# --- on a real broker -----------------------------------------------------------------------


@dataclass
class Produced:
    invalid: dict[tuple[int, int], Entry]  # (partition, offset) -> corpus entry
    key_of: dict[tuple[int, int], bytes]
    accepted: list[dict[str, Any]]  # what the worker must count (synthetic and corpus)
    count: int


def _produce_corpus(bootstrap: str, topic: str, partitions: int, synthetic: int) -> Produced:
    """Every corpus entry, round robin over the partitions, between valid synthetic events."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    valid = list(synthetic_events(synthetic, seed=41))
    placed: dict[tuple[int, int], Entry] = {}
    key_of: dict[tuple[int, int], bytes] = {}
    errors: list[str] = []
    delivered = 0

    def report(entry: Entry | None) -> Any:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            nonlocal delivered
            if err is not None:
                errors.append(f"{entry.name if entry else 'synthetic'}: {err.str()}")
                return
            delivered += 1
            if entry is not None and entry.expect != ACCEPTED:
                where = (msg.partition(), msg.offset())
                placed[where] = entry
                key_of[where] = msg.key()

        return on_delivery

    pending = iter(valid)
    for n, entry in enumerate(CORPUS):
        for event in (next(pending, None), next(pending, None)):
            if event is not None:
                value = json.dumps(event).encode()
                key = event["event_id"].encode()
                producer.produce(topic, value, key=key, on_delivery=report(None))
        producer.produce(
            topic,
            entry.value,
            key=f"hostile-{n}".encode(),
            partition=n % partitions,
            headers=[("corpus.entry", entry.name.encode())],
            on_delivery=report(entry),
        )
        producer.poll(0)
    for event in pending:
        value = json.dumps(event).encode()
        producer.produce(topic, value, key=event["event_id"].encode(), on_delivery=report(None))
    assert producer.flush(30) == 0
    assert not errors, errors
    accepted = valid + [_parsed(e) for e in VALID]
    assert delivered == len(valid) + len(CORPUS)
    return Produced(placed, key_of, accepted, delivered)


def _produce_values(bootstrap: str, topic: str, values: list[bytes], max_bytes: int) -> None:
    """`values` in order to partition 0; returns once all are acknowledged."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "message.max.bytes": max_bytes}
    )
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    for value in values:
        producer.produce(topic, value, partition=0, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert not errors, errors


def _parsed(entry: Entry) -> dict[str, Any]:
    assert entry.value is not None
    return UsageEventV1.model_validate_json(entry.value).model_dump()


@pytest.mark.integration
def test_hostile_corpus_through_a_live_worker(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    partitions = 3
    topic = topic_factory(partitions)
    produced = _produce_corpus(kafka_bootstrap, topic, partitions, synthetic=300)
    assert len(produced.invalid) == len(INVALID)

    args = ("--batch-size", "50", "--batch-wait-ms", "50", "--max-message-bytes", str(MAX_BYTES))
    worker = WorkerProcess(kafka_bootstrap, topic, group_id, tmp_path, *args).start()
    worker.wait_ready()

    def done() -> bool:
        scraped = worker.scrape()
        return total(scraped, "usage_consumer_dead_letters_total") >= len(INVALID) and total(
            scraped, "llm_request_count_total"
        ) >= len(produced.accepted)

    worker.wait_for(done, 30, "through the corpus")
    scraped = worker.scrape()

    # Accepted events, synthetic and hostile-but-valid, are counted exactly, labels and all.
    assert usage_series(scraped) == expected_series(produced.accepted)
    assert total(scraped, "usage_consumer_messages_consumed_total") == produced.count
    assert total(scraped, "usage_consumer_events_recorded_total") == len(produced.accepted)
    reasons = Counter(e.expect for e in INVALID)
    for reason in Reason:
        want = reasons[reason.value]
        got = total(scraped, "usage_consumer_messages_rejected_total", reason=reason.value)
        assert got == want, reason
        assert total(scraped, "usage_consumer_dead_letters_total", reason=reason.value) == want

    # Every rejected entry is in the dead-letter topic exactly once, unchanged, with its reason.
    letters = read_topic(kafka_bootstrap, f"{topic}.dlq")
    assert len(letters) == len(INVALID)
    seen: set[tuple[int, int]] = set()
    for letter in letters:
        headers = dict(letter.headers() or [])
        assert headers["dlq.source.topic"] == topic.encode()
        where = (int(headers["dlq.source.partition"]), int(headers["dlq.source.offset"]))
        assert where not in seen, f"dead-lettered twice: {where}"
        seen.add(where)
        entry = produced.invalid[where]
        assert headers["corpus.entry"] == entry.name.encode()
        assert headers["dlq.reason"] == entry.expect.encode(), entry.name
        assert letter.value() == entry.value, entry.name
        assert letter.key() == produced.key_of[where]
        detail = headers["dlq.detail"]
        assert detail
        assert len(detail) <= MAX_DETAIL_LENGTH
    assert seen == set(produced.invalid)

    # Nothing stalls: every partition is committed to its end. Commits may wait for a scrape to
    # cover the offsets, so scrape while waiting.
    ends = end_offsets(kafka_bootstrap, topic, partitions)
    probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group_id})
    try:

        def committed_to_end() -> bool:
            worker.scrape()
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            got = {tp.partition: tp.offset for tp in probe.committed(tps, timeout=10)}
            return got == ends

        worker.wait_for(committed_to_end, 60, f"committed to the end ({ends})")
    finally:
        probe.close()

    # Still alive, still healthy, and a clean exit.
    assert worker.proc is not None
    assert worker.proc.poll() is None
    assert worker.get("/healthz")[0] == 200
    assert worker.stop(signal.SIGTERM) == 0
    # Shutting down dead-lettered nothing a second time.
    assert end_offsets(kafka_bootstrap, f"{topic}.dlq", 1) == {0: len(INVALID)}
    assert "Traceback" not in worker.log_path.read_text(errors="replace"), worker.log()


# Found with this corpus: librdkafka's producer refuses (in produce(), with an exception) any
# message over its message.max.bytes, 1,000,000 by default, while the broker's default limit is
# 1,048,588 bytes and Java producers send up to 1 MiB by default. The dead-letter producer used
# to raise on such a message and the worker died on it again and again. Now a dead letter too
# large for the DLQ is written truncated, marked by headers, and the partition moves on.
@pytest.mark.integration
def test_message_too_big_for_the_dlq_is_dead_lettered_truncated(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    topic = topic_factory(1)
    events = [json.dumps(e).encode() for e in synthetic_events(2, seed=43)]
    big = b'{"blob": "' + b"A" * 1_040_000 + b'"}'
    # Up to the broker's default limit (librdkafka's own default is lower).
    _produce_values(kafka_bootstrap, topic, [events[0], big, events[1]], max_bytes=1_048_588)

    worker = WorkerProcess(kafka_bootstrap, topic, group_id, tmp_path, "--batch-wait-ms", "50")
    worker.start()
    try:
        worker.wait_ready()
        worker.wait_for(
            lambda: (
                total(worker.scrape(), "usage_consumer_dead_letters_total", reason="too_large") == 1
                and total(worker.scrape(), "llm_request_count_total") == 2
            ),
            20,
            "past the big message",
        )
        probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group_id})
        try:

            def committed_to_end() -> bool:
                worker.scrape()
                (tp,) = probe.committed([TopicPartition(topic, 0)], timeout=10)
                return bool(tp.offset == 3)

            worker.wait_for(committed_to_end, 30, "committed past the big message")
        finally:
            probe.close()
        assert worker.get("/healthz")[0] == 200
    finally:
        code = worker.stop(signal.SIGTERM)
    assert code == 0
    (letter,) = read_topic(kafka_bootstrap, f"{topic}.dlq")
    headers = dict(letter.headers() or [])
    assert headers["dlq.reason"] == b"too_large"
    assert headers["dlq.value.truncated"] == b"true"
    assert headers["dlq.value.size"] == str(len(big)).encode()
    (source,) = [m for m in read_topic(kafka_bootstrap, topic) if m.value() == big]
    assert headers["dlq.source.offset"] == str(source.offset()).encode()
    assert letter.value() == big[:TRUNCATED_VALUE_BYTES]
