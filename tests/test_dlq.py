"""Dead-letter tools: summary, show and redrive, on letters written by the worker's own sink."""

from __future__ import annotations

import io
import re
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from prometheus_client import CollectorRegistry

from consumer.errors import ConfigError, KafkaOperationError, UsageConsumerError
from consumer.exposition.self_metrics import WorkerMetrics
from consumer.kafka import dlq
from consumer.pipeline.deadletter import TRUNCATED_VALUE_BYTES, DeadLetter, DeadLetterSink
from consumer.pipeline.ledger import OffsetLedger
from consumer.pipeline.validate import Reason, Rejection
from consumer.settings import Settings
from tests.conftest import TopicFactory

SOURCE_PARTITIONS = 3
BASE_MS = 1_780_000_000_000  # 2026-05-28T20:26:40Z
HOSTILE = b"\x1b[2J\x1b]0;pwned\x07line1\nline2\r\t\xff\xfe \xe2\x80\xaeevil \xc3\xa9"
# What show prints of it: every escape as text; the RTL override escaped, the é kept (printable).
HOSTILE_SHOWN = "\\x1b[2J\\x1b]0;pwned\\x07line1\\nline2\\r\\t\\xff\\xfe \\u202eevil \u00e9"


# --- without a broker --------------------------------------------------------------------------


def _letter(
    topic: str,
    partition: int,
    offset: int,
    reason: Reason,
    *,
    value: bytes | None = b"{",
    key: bytes | None = None,
    headers: list[tuple[str, str | bytes | None]] | None = None,
    seconds: int = 0,
    detail: str = "",
) -> DeadLetter:
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        headers=headers or [],
        timestamp_ms=BASE_MS + seconds * 1000,
        rejection=Rejection(reason, detail or f"{reason.value} detail"),
    )


def test_the_header_names_are_the_ones_the_worker_writes() -> None:
    letter = _letter("t", 1, 2, Reason.TOO_LARGE, value=b"x" * 10).truncated()
    assert [name for name, _ in letter.dlq_headers()] == [
        dlq.HEADER_REASON,
        dlq.HEADER_DETAIL,
        dlq.HEADER_SOURCE_TOPIC,
        dlq.HEADER_SOURCE_PARTITION,
        dlq.HEADER_SOURCE_OFFSET,
        dlq.HEADER_VALUE_TRUNCATED,
        dlq.HEADER_VALUE_SIZE,
    ]
    assert all(n.startswith(dlq.DLQ_HEADER_PREFIX) for n, _ in letter.dlq_headers())


def test_escape_leaves_no_control_character_and_counts_the_cut() -> None:
    text, cut = dlq.escape(HOSTILE, 1000)
    assert text == HOSTILE_SHOWN
    assert cut == 0
    assert all(c.isprintable() for c in text)
    # A cut inside a character leaves the whole character out and counts its bytes as cut.
    assert dlq.escape("aé".encode(), 2) == ("a", 2)
    assert dlq.escape(b"abcdef", 4) == ("abcd", 2)
    # Invalid UTF-8 at the very end of a value that is not cut is shown, not held back.
    assert dlq.escape(b"ab\xe2\x80", 10) == ("ab\\xe2\\x80", 0)


def test_offset_filters_parse_or_say_what_is_wrong() -> None:
    assert dlq.parse_offsets("120") == (120, 120)
    assert dlq.parse_offsets("100-199") == (100, 199)
    for bad in ("x", "5-", "-3", "9-2", "1-2-3"):
        with pytest.raises(UsageConsumerError, match="--offset"):
            dlq.parse_offsets(bad)
    assert dlq.Filters.of(["invalid_json"], 1, "3-4") == dlq.Filters(
        frozenset({"invalid_json"}), 1, (3, 4)
    )
    assert dlq.Filters.of() == dlq.NO_FILTERS
    with pytest.raises(UsageConsumerError, match="--partition -1 is negative"):
        dlq.Filters.of(partition=-1)


# --- on a real broker --------------------------------------------------------------------------


def _sink_write(bootstrap: str, dlq_topic: str, letters: list[DeadLetter]) -> None:
    """Through the worker's DeadLetterSink, as the worker writes them."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    sink = DeadLetterSink(
        producer, dlq_topic, OffsetLedger("record"), WorkerMetrics.create(CollectorRegistry())
    )
    for letter in letters:
        sink.send(letter)
    assert sink.flush(30) == 0
    deadline = time.monotonic() + 30
    while sink.blocked() and time.monotonic() < deadline:
        sink.service(0.1)
    assert not sink.blocked()


def _read_all(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, int | None, Message]]:
    """(partition, offset, message) of every record, independently of consumer.kafka.dlq."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-read-all"})
    out = []
    try:
        for p in range(partitions):
            end = reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            if not end:
                continue
            reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING)])
            got = 0
            deadline = time.monotonic() + 30
            while got < end and time.monotonic() < deadline:
                for m in reader.consume(100, timeout=0.5):
                    assert m.error() is None, m.error()
                    out.append((p, m.offset(), m))
                    got += 1
            assert got == end
    finally:
        reader.close()
    return out


@pytest.fixture
def dead_letters(kafka_bootstrap: str, topic_factory: TopicFactory) -> tuple[str, str]:
    """A source topic (3 partitions, empty) and its DLQ holding seven letters."""
    topic = topic_factory(SOURCE_PARTITIONS)
    letters = [
        _letter(
            topic,
            0,
            5,
            Reason.INVALID_JSON,
            value=b'{"provider": ',
            key=b"k-a",
            headers=[("trace", b"t1")],
            seconds=0,
        ),
        _letter(
            topic,
            1,
            7,
            Reason.SCHEMA_VIOLATION,
            value=b'{"provider":"x"}',
            key=b"k-b",
            headers=[("trace", b"t2"), ("tenant", b"acme")],
            seconds=60,
        ),
        _letter(topic, 1, 9, Reason.INVALID_JSON, value=HOSTILE, key=b"\x1b[31mred", seconds=120),
        _letter(topic, 2, 3, Reason.SCHEMA_VIOLATION, value=b"{}", key=b"k-d", seconds=180),
        # The same source event again (a worker killed before its commit redid it).
        _letter(
            topic,
            1,
            7,
            Reason.SCHEMA_VIOLATION,
            value=b'{"provider":"x"}',
            key=b"k-b",
            headers=[("trace", b"t2"), ("tenant", b"acme")],
            seconds=60,
        ),
        _letter(
            topic, 0, 11, Reason.TOO_LARGE, value=b"y" * 70_000, headers=[("h", b"v")], seconds=240
        ).truncated(),
        _letter(topic, 2, 8, Reason.EMPTY, value=None, key=b"k-e", seconds=300),
    ]
    _sink_write(kafka_bootstrap, f"{topic}.dlq", letters)
    return topic, f"{topic}.dlq"


@pytest.mark.integration
def test_summary_counts_per_reason_with_the_time_range(
    kafka_bootstrap: str, admin: AdminClient, dead_letters: tuple[str, str]
) -> None:
    topic, dlq_topic = dead_letters
    # The CLI's config: the worker's consumer settings, group and all (the reader drops them).
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic=topic)
    assert settings.dead_letter_topic == dlq_topic
    config = settings.consumer_config()
    out = io.StringIO()
    assert dlq.summary(config, dlq_topic, out) == 0
    assert out.getvalue() == (
        f"dead letters in {dlq_topic}: 7\n"
        "reason            letters  first (UTC)               last (UTC)\n"
        "empty                   1  2026-05-28T20:31:40.000Z  2026-05-28T20:31:40.000Z\n"
        "invalid_json            2  2026-05-28T20:26:40.000Z  2026-05-28T20:28:40.000Z\n"
        "schema_violation        3  2026-05-28T20:27:40.000Z  2026-05-28T20:29:40.000Z\n"
        "too_large               1  2026-05-28T20:30:40.000Z  2026-05-28T20:30:40.000Z\n"
        "total                   7  2026-05-28T20:26:40.000Z  2026-05-28T20:31:40.000Z\n"
    )

    out = io.StringIO()
    dlq.summary(
        config, dlq_topic, out, by_partition=True, filters=dlq.Filters.of(["schema_violation"])
    )
    assert out.getvalue() == (
        f"dead letters in {dlq_topic} (reason schema_violation): 3\n"
        "reason            partition  letters  first (UTC)               last (UTC)\n"
        "schema_violation          1        2  2026-05-28T20:27:40.000Z  2026-05-28T20:27:40.000Z\n"
        "schema_violation          2        1  2026-05-28T20:29:40.000Z  2026-05-28T20:29:40.000Z\n"
        "total                              3  2026-05-28T20:27:40.000Z  2026-05-28T20:29:40.000Z\n"
    )

    out = io.StringIO()
    dlq.summary(config, dlq_topic, out, filters=dlq.Filters.of(["not_utf8"]))
    assert out.getvalue() == f"no dead letters in {dlq_topic} (reason not_utf8)\n"

    # Read without a group: nothing was joined or committed, under the worker's group or any.
    groups = {g.group_id for g in admin.list_consumer_groups().result(timeout=30).valid}
    assert settings.group_id not in groups
    assert not [g for g in groups if g.startswith("usage-consumer-dlq-reader")]


@pytest.mark.integration
def test_show_filters_and_escapes_a_hostile_value(
    kafka_bootstrap: str, dead_letters: tuple[str, str]
) -> None:
    topic, dlq_topic = dead_letters
    config = {"bootstrap.servers": kafka_bootstrap}
    out = io.StringIO()
    filters = dlq.Filters.of(["invalid_json"], partition=1)
    assert dlq.show(config, dlq_topic, out, filters=filters) == 0
    assert out.getvalue() == (
        f"{dlq_topic}/0@2  2026-05-28T20:28:40.000Z\n"
        "  reason   invalid_json\n"
        "  detail   invalid_json detail\n"
        f"  source   {topic}/1@9\n"
        "  key      8 bytes: \\x1b[31mred\n"
        f"  value    40 bytes: {HOSTILE_SHOWN}\n"
        "\n"
        f"shown 1 of 1 matching dead letters (7 in {dlq_topic})\n"
    )
    assert "\x1b" not in out.getvalue()
    assert "\u202e" not in out.getvalue()

    # By source offset range, the value cut, a limit; the duplicate letter is shown too.
    out = io.StringIO()
    filters = dlq.Filters.of(partition=1, offsets="6-8")
    dlq.show(config, dlq_topic, out, filters=filters, limit=1, max_bytes=5)
    assert out.getvalue() == (
        f"{dlq_topic}/0@1  2026-05-28T20:27:40.000Z\n"
        "  reason   schema_violation\n"
        "  detail   schema_violation detail\n"
        f"  source   {topic}/1@7\n"
        "  key      3 bytes: k-b\n"
        "  header   trace: t2\n"
        "  header   tenant: acme\n"
        '  value    16 bytes, first 5 shown (11 cut): {"pro\n'
        "\n"
        f"shown 1 of 2 matching dead letters (7 in {dlq_topic}); raise --limit to see more\n"
    )

    # The worker's cut letter and a null value.
    out = io.StringIO()
    dlq.show(config, dlq_topic, out, filters=dlq.Filters.of(["too_large", "empty"]), max_bytes=3)
    assert out.getvalue() == (
        f"{dlq_topic}/0@5  2026-05-28T20:30:40.000Z\n"
        "  reason   too_large\n"
        "  detail   too_large detail\n"
        f"  source   {topic}/0@11\n"
        "  key      null\n"
        f"  value    {TRUNCATED_VALUE_BYTES:,} bytes, first 3 shown (65,533 cut): yyy\n"
        "  cut      by the worker to fit the dead-letter topic: the original value had 70,000 "
        "bytes, its headers were dropped\n"
        "\n"
        f"{dlq_topic}/0@6  2026-05-28T20:31:40.000Z\n"
        "  reason   empty\n"
        "  detail   empty detail\n"
        f"  source   {topic}/2@8\n"
        "  key      3 bytes: k-e\n"
        "  value    null\n"
        "\n"
        f"shown 2 of 2 matching dead letters (7 in {dlq_topic})\n"
    )

    out = io.StringIO()
    dlq.show(config, dlq_topic, out, filters=dlq.Filters.of(["invalid-json"]))
    assert out.getvalue() == (
        f"no dead letter matches (reason invalid-json) among the 7 in {dlq_topic} (reasons "
        "there: empty, invalid_json, schema_violation, too_large)\n"
    )


@pytest.mark.integration
def test_redrive_asks_then_republishes_each_chosen_event_once(
    kafka_bootstrap: str, dead_letters: tuple[str, str]
) -> None:
    topic, dlq_topic = dead_letters
    config = {"bootstrap.servers": kafka_bootstrap}
    filters = dlq.Filters.of(["schema_violation", "too_large"])
    questions: list[str] = []

    def decline(question: str) -> bool:
        questions.append(question)
        return False

    out = io.StringIO()
    assert dlq.redrive(config, config, dlq_topic, out, decline, filters=filters) == 1
    plan = (
        f"redrive from {dlq_topic} (reason schema_violation|too_large): 4 dead letters\n"
        f"{'to topic'.ljust(len(topic))}  reason            events\n"
        f"{topic}  schema_violation       2\n"
        f"{'total'.ljust(len(topic))}                         2\n"
        "skipped: 1 more dead letter(s) of the same source events (each event is republished "
        "once)\n"
        "skipped: 1 dead letter(s) cut by the worker (not the original value; republish those "
        "from the producer)\n"
        "Each event goes to its source topic and partition with its original key and headers\n"
        "(dlq.* removed). The workers validate them again: the valid ones are counted once\n"
        "(they never were, having been rejected); the still invalid ones are dead-lettered\n"
        f"again. The dead letters stay in {dlq_topic}: redriving the same ones a second\n"
        "time publishes them again and counts the valid ones twice.\n"
    )
    assert out.getvalue() == plan + "nothing redriven\n"
    assert questions == [f"Republish 2 events to {topic} (validated again by the workers)?"]
    assert _read_all(kafka_bootstrap, topic, SOURCE_PARTITIONS) == []

    out = io.StringIO()
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic=topic)
    assert (
        dlq.redrive(
            settings.consumer_config(),
            settings.producer_config(),
            dlq_topic,
            out,
            lambda _: True,
            filters=filters,
        )
        == 0
    )
    assert out.getvalue() == plan + f"redriven: 2 events to {topic}, every one acknowledged\n"
    records = _read_all(kafka_bootstrap, topic, SOURCE_PARTITIONS)
    assert [(p, o, m.key(), m.value(), m.headers()) for p, o, m in records] == [
        (1, 0, b"k-b", b'{"provider":"x"}', [("trace", b"t2"), ("tenant", b"acme")]),
        (2, 0, b"k-d", b"{}", None),
    ]

    # Nothing matches: nothing asked, nothing sent.
    out = io.StringIO()
    only_cut = dlq.Filters.of(["too_large"])
    assert dlq.redrive(config, config, dlq_topic, out, decline, filters=only_cut) == 1
    assert out.getvalue().endswith("nothing to redrive\n")
    assert len(questions) == 1


@pytest.mark.integration
def test_redrive_fails_loudly_when_the_broker_refuses_some(
    kafka_bootstrap: str, admin: AdminClient, topic_factory: TopicFactory
) -> None:
    dlq_topic = topic_factory(1, with_dlq=False)
    small = f"{dlq_topic}-small"
    # Two partitions: one batch each, so the broker refuses only the big one's.
    new = NewTopic(small, 2, 1, config={"max.message.bytes": "2000"})
    for future in admin.create_topics([new]).values():
        future.result(timeout=30)
    _sink_write(
        kafka_bootstrap,
        dlq_topic,
        [
            _letter(small, 0, 1, Reason.SCHEMA_VIOLATION, value=b"{}", key=b"ok"),
            _letter(small, 1, 2, Reason.SCHEMA_VIOLATION, value=b"z" * 5000, key=b"big"),
        ],
    )
    config = {"bootstrap.servers": kafka_bootstrap}
    out = io.StringIO()
    with pytest.raises(
        KafkaOperationError,
        match=r"redrive incomplete: 1 of 2 events acknowledged, 1 failed \(first error: .*\)",
    ):
        dlq.redrive(config, config, dlq_topic, out, lambda _: True)
    assert f"failed: {small}/1@2: Broker: Message size too large\n" in out.getvalue()
    assert [m.key() for _, _, m in _read_all(kafka_bootstrap, small, 2)] == [b"ok"]

    # A source topic that is gone: refused before anything is sent.
    _sink_write(kafka_bootstrap, dlq_topic, [_letter("no-such-topic", 0, 1, Reason.EMPTY)])
    with pytest.raises(UsageConsumerError, match="cannot redrive to 'no-such-topic'"):
        dlq.redrive(config, config, dlq_topic, io.StringIO(), lambda _: True)


@pytest.mark.integration
def test_a_missing_dead_letter_topic_is_named(kafka_bootstrap: str) -> None:
    with pytest.raises(
        ConfigError, match=re.escape("dead-letter topic 'no-such-topic.dlq' does not exist")
    ):
        dlq.summary({"bootstrap.servers": kafka_bootstrap}, "no-such-topic.dlq", io.StringIO())
