"""The worker loop's decisions, in process, against hand-written fakes of the Kafka clients.

Everything but the client boundary is real: the ledger, committer, dead-letter sink, rebalancer,
pause manager, health state, the worker's metrics on a real prometheus registry, and (for the
round trip) a real TokenTracker on a real MeterProvider. No broker, no network, no subprocess.
Values are read back from the registry and the ledger, exactly.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry, generate_latest

from consumer.exposition.self_metrics import WorkerMetrics
from consumer.exposition.text import TextRenderer
from consumer.kafka.source import KafkaSource, PartitionKey
from consumer.pipeline import deadletter as deadletter_module
from consumer.pipeline import ledger as ledger_module
from consumer.pipeline.batch import PartitionSpan, split
from consumer.pipeline.commit import Committer, ScrapeAcknowledger
from consumer.pipeline.deadletter import TRUNCATED_VALUE_BYTES, DeadLetter, DeadLetterSink
from consumer.pipeline.health import HealthState
from consumer.pipeline.ledger import CommitMode, LedgerCollector, OffsetLedger, ScrapeSnapshot
from consumer.pipeline.pausing import Backpressure, PauseManager
from consumer.pipeline.rebalance import Rebalancer
from consumer.pipeline.spread import KeySpread
from consumer.pipeline.validate import Reason, Rejection
from consumer.pipeline.worker import Worker
from consumer.usage.expiry import SeriesExpiry
from consumer.usage.provider import build_meter_provider, build_usage
from consumer.usage.record import Recorder
from consumer.usage.tracker import TokenTracker

# --- fakes of the client boundary -----------------------------------------------------------

Headers = list[tuple[str, str | bytes | None]]
DeliveryCallback = Callable[[KafkaError | None, Any], None]


@dataclass
class FakeMessage:
    """A consumed message without an error (confluent_kafka.Message's reading methods)."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None
    _headers: Headers | None = None
    _timestamp: tuple[int, int] = (TIMESTAMP_CREATE_TIME, 1_714_564_800_000)

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> Headers | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def error(self) -> KafkaError | None:
        return None


class FailedPartition(TopicPartition):
    """A commit result carrying a per-partition error (TopicPartition.error is read-only)."""

    def __init__(self, topic: str, partition: int, offset: int, error: KafkaError) -> None:
        super().__init__(topic, partition, offset)
        self._error = error

    @property
    def error(self) -> KafkaError:  # type: ignore[override]
        return self._error


CommitOutcome = KafkaException | list[TopicPartition] | None
"""What one commit call does: raise, return these results, or (None) succeed for every offset."""


class FakeConsumer:
    """The confluent_kafka.Consumer calls the loop makes: synchronous commits, member id."""

    def __init__(self, outcomes: list[CommitOutcome] | None = None) -> None:
        self.outcomes = list(outcomes or [])  # one per commit call, then success
        self.attempts: list[list[tuple[str, int, int]]] = []  # every commit call
        self.committed: list[list[tuple[str, int, int]]] = []  # the calls that succeeded
        self.paused: list[list[tuple[str, int]]] = []
        self.resumed: list[list[tuple[str, int]]] = []

    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: bool = True
    ) -> list[TopicPartition]:
        assert asynchronous is False
        seen = [(tp.topic, tp.partition, tp.offset) for tp in offsets]
        self.attempts.append(seen)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, KafkaException):
            raise outcome
        if outcome is not None:
            return outcome
        self.committed.append(seen)
        return [TopicPartition(t, p, o) for t, p, o in seen]

    def memberid(self) -> str:
        return "member-1"

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.append(sorted((tp.topic, tp.partition) for tp in partitions))

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resumed.append(sorted((tp.topic, tp.partition) for tp in partitions))


@dataclass
class Produced:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: Headers
    timestamp: int


class FakeProducer:
    """The confluent_kafka.Producer calls of the dead-letter sink.

    Delivery reports are queued by produce() and fired by poll()/flush(); each takes the next
    of `failures` (a KafkaError) or succeeds. With `stalled`, nothing is acknowledged (a broker
    that does not answer). A value above `max_value_bytes` is refused by produce() itself.
    """

    def __init__(
        self, failures: list[KafkaError] | None = None, max_value_bytes: int | None = None
    ) -> None:
        self.failures = list(failures or [])
        self.max_value_bytes = max_value_bytes
        self.stalled = False
        self.produced: list[Produced] = []
        self.purged = self.closed = False
        self._queue: list[tuple[DeliveryCallback, Produced]] = []

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Headers | None = None,
        on_delivery: DeliveryCallback | None = None,
        timestamp: int = 0,
    ) -> None:
        if self.max_value_bytes is not None and len(value or b"") > self.max_value_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        assert on_delivery is not None
        record = Produced(topic, value, key, list(headers or []), timestamp)
        self.produced.append(record)
        self._queue.append((on_delivery, record))

    def poll(self, timeout: float = 0.0) -> int:
        if self.stalled:
            return 0
        queued, self._queue = self._queue, []
        for callback, record in queued:
            callback(self.failures.pop(0) if self.failures else None, record)
        return len(queued)

    def flush(self, timeout: float = 0.0) -> int:
        for _ in range(10):  # a callback may produce again (the truncated re-send)
            if not self.poll(timeout):
                break
        return len(self._queue)

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        self.purged = True
        if in_queue:
            self._queue.clear()

    def close(self) -> None:
        self.closed = True


class FakeSource:
    """KafkaSource's surface for the worker and the pause manager, with the rebalance callbacks
    driven by hand (a revoked partition leaves the assignment and the paused set, as in
    KafkaSource._release; a newly assigned one is not paused, as in librdkafka)."""

    def __init__(self, consumer: FakeConsumer, listener: Rebalancer) -> None:
        self.consumer = consumer
        self.listener = listener
        self.assignment: set[PartitionKey] = set()
        self._paused: set[PartitionKey] = set()
        self.batches: list[list[FakeMessage]] = []
        self.drained: threading.Event | None = None  # set once the last batch is read
        self.reads: list[tuple[int, float]] = []
        self.wakes: list[threading.Event | None] = []
        self.pause_calls = 0
        self.subscribed = self.closed = False

    def assign(self, keys: list[PartitionKey]) -> None:
        self.assignment.update(keys)
        self.listener.on_assigned(as_consumer(self.consumer), sorted(keys))

    def revoke(self, keys: list[PartitionKey], *, lost: bool = False) -> None:
        self.listener.on_revoked(as_consumer(self.consumer), sorted(keys), lost)
        self.assignment.difference_update(keys)
        self._paused.difference_update(keys)

    def read_batch(
        self, max_messages: int, max_wait_s: float, wake: threading.Event | None = None
    ) -> list[FakeMessage]:
        self.reads.append((max_messages, max_wait_s))
        self.wakes.append(wake)
        batch = self.batches.pop(0)[:max_messages] if self.batches else []
        if not self.batches and self.drained is not None:
            self.drained.set()
        return batch

    @property
    def paused(self) -> set[PartitionKey]:
        return set(self._paused)

    def pause(self, keys: set[PartitionKey]) -> None:
        self.pause_calls += 1
        self._paused |= keys

    def resume(self, keys: set[PartitionKey]) -> None:
        self._paused -= keys

    def subscribe(self) -> None:
        self.subscribed = True

    def close(self) -> None:
        """Leaving the group revokes everything still assigned, like Consumer.close()."""
        if self.assignment:
            self.revoke(sorted(self.assignment))
        self.closed = True


class FakeClock:
    """Stands in for the `time` module of one product module: monotonic() and time()."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_714_564_800.0 + self.now


def as_consumer(fake: FakeConsumer) -> Consumer:
    return cast(Consumer, fake)


def as_messages(fakes: list[FakeMessage]) -> list[Message]:
    return cast(list[Message], fakes)


# --- the real pipeline around the fakes ------------------------------------------------------

TOPIC = "usage"
DLQ = "usage.dlq"
P0: PartitionKey = (TOPIC, 0)
P1: PartitionKey = (TOPIC, 1)

EVENT_A: dict[str, Any] = {
    "schema_version": 1,
    "event_id": "evt-a",
    "occurred_at": "2024-05-01T12:00:00Z",
    "provider": "openai",
    "model": "gpt-4o",
    "status": "success",
    "input_tokens": 100,
    "output_tokens": 20,
    "latency_ms": 180,
}
EVENT_B: dict[str, Any] = {
    "schema_version": 1,
    "event_id": "evt-b",
    "occurred_at": "2024-05-01T14:34:56+02:00",
    "provider": "anthropic",
    "model": "claude-3-5-sonnet-20240620",
    "status": "error",
    "error_code": "overloaded",
    "input_tokens": 7,
    "latency_ms": 2450,
}
# llm_error_code is set on B only, and backfilled with "" in every series of a family that has
# it somewhere (as the OpenTelemetry exporter does): the worker tests record both A and B.
LABELS_A = {
    "llm_error_code": "",
    "llm_provider": "openai",
    "llm_provider_uuid": "",
    "llm_model": "gpt-4o",
    "llm_request_model": "",
    "llm_scenario": "",
    "llm_streaming": "false",
    "llm_response_status": "success",
}
LABELS_B = {
    **LABELS_A,
    "llm_provider": "anthropic",
    "llm_model": "claude-3-5-sonnet-20240620",
    "llm_response_status": "error",
    "llm_error_code": "overloaded",
}


def event(template: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**template, **changes}).encode()


def msg(partition: int, offset: int, value: bytes | None, **kwargs: Any) -> FakeMessage:
    return FakeMessage(TOPIC, partition, offset, value, **kwargs)


@dataclass
class Loop:
    registry: CollectorRegistry
    metrics: WorkerMetrics
    ledger: OffsetLedger
    consumer: FakeConsumer
    producer: FakeProducer
    sink: DeadLetterSink
    committer: Committer
    health: HealthState
    rebalancer: Rebalancer
    pauses: PauseManager
    source: FakeSource

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def scrape(self) -> bytes:
        """What the /metrics server does around a collect (consumer.web.server)."""
        acknowledger = ScrapeAcknowledger(self.ledger, self.metrics)
        token = acknowledger.before_collect()
        body = generate_latest(self.registry)
        acknowledger.after_response(token)
        return body


def make_loop(
    mode: CommitMode = "scrape",
    *,
    handover_timeout_s: float = 1.0,
    max_events: int = 1_000_000,
    max_age_s: float = 300.0,
    producer: FakeProducer | None = None,
    consumer: FakeConsumer | None = None,
    registry: CollectorRegistry | None = None,
) -> Loop:
    registry = registry if registry is not None else CollectorRegistry()
    metrics = WorkerMetrics.create(registry)
    ledger = OffsetLedger(mode)
    registry.register(LedgerCollector(ledger))
    consumer = consumer if consumer is not None else FakeConsumer()
    producer = producer if producer is not None else FakeProducer()
    sink = DeadLetterSink(cast(Producer, producer), DLQ, ledger, metrics)
    committer = Committer(ledger, metrics)
    health = HealthState()
    rebalancer = Rebalancer(
        ledger, committer, sink, metrics, health, handover_timeout_s=handover_timeout_s
    )
    pauses = PauseManager(Backpressure(max_events, max_age_s), ledger, sink, metrics, health)
    source = FakeSource(consumer, rebalancer)
    return Loop(
        registry=registry,
        metrics=metrics,
        ledger=ledger,
        consumer=consumer,
        producer=producer,
        sink=sink,
        committer=committer,
        health=health,
        rebalancer=rebalancer,
        pauses=pauses,
        source=source,
    )


def letter(partition: int, offset: int, value: bytes | None = b"{", **kwargs: Any) -> DeadLetter:
    rejection = Rejection(Reason.INVALID_JSON, "invalid JSON at byte 1")
    return DeadLetter.of(cast(Message, msg(partition, offset, value, **kwargs)), rejection)


def positions(ledger: OffsetLedger, key: PartitionKey) -> tuple[int, int, int, int, int, int]:
    """(processed, recorded, covered, committable, committed, held) of one partition."""
    s = ledger.states()[key]
    return (s.processed, s.recorded, s.covered, s.committable, s.committed, s.held)


# --- 1. batch splitting ----------------------------------------------------------------------


def test_split_a_mixed_batch_over_two_partitions() -> None:
    oversize = event(EVENT_A, padding="x" * 600)  # valid JSON, unknown field, too large
    assert len(oversize) > 512
    messages = [
        msg(0, 10, event(EVENT_A), _key=b"gw-1", _headers=[("trace", b"t1")]),
        msg(0, 11, b'{"schema_version": 1,', _key=b"gw-1", _headers=[("trace", b"t2")]),
        msg(1, 5, event(EVENT_B)),
        msg(0, 12, event(EVENT_B, extra_field="ignored")),  # unknown field: the model's path
        msg(1, 6, b"", _timestamp=(TIMESTAMP_NOT_AVAILABLE, 0)),
        msg(1, 7, oversize),
    ]

    batch = split(as_messages(messages), 512)

    assert batch.size == 6
    assert [(e.provider, e.model, e.status, e.input_tokens) for e in batch.events] == [
        ("openai", "gpt-4o", "success", 100),
        ("anthropic", "claude-3-5-sonnet-20240620", "error", 7),
        ("anthropic", "claude-3-5-sonnet-20240620", "error", 7),
    ]
    assert [(d.topic, d.partition, d.offset, d.rejection.reason) for d in batch.rejected] == [
        (TOPIC, 0, 11, Reason.INVALID_JSON),
        (TOPIC, 1, 6, Reason.EMPTY),
        (TOPIC, 1, 7, Reason.TOO_LARGE),
    ]
    invalid, empty, too_large = batch.rejected
    assert (invalid.key, invalid.value, invalid.headers, invalid.timestamp_ms) == (
        b"gw-1",
        b'{"schema_version": 1,',
        [("trace", b"t2")],
        1_714_564_800_000,
    )
    assert (empty.value, empty.headers, empty.timestamp_ms) == (b"", [], 0)
    assert empty.rejection.detail == "message value is empty"
    assert too_large.rejection.detail == f"message value is {len(oversize)} bytes, limit is 512"
    assert batch.spans == {
        P0: PartitionSpan(end=13, recorded=2, last_recorded=12),
        P1: PartitionSpan(end=8, recorded=1, last_recorded=5),
    }


def test_split_a_batch_of_only_rejections_records_nothing_on_its_partition() -> None:
    batch = split(as_messages([msg(1, 40, None), msg(1, 41, b"[1, 2]")]), 1024)
    assert batch.events == []
    assert [(d.offset, d.rejection.reason, d.rejection.detail) for d in batch.rejected] == [
        (40, Reason.EMPTY, "message value is null (tombstone)"),
        (41, Reason.NOT_AN_OBJECT, "top-level JSON value is an array, expected an object"),
    ]
    assert batch.spans == {P1: PartitionSpan(end=42, recorded=0, last_recorded=-1)}


# --- 2. hand-over outcomes -------------------------------------------------------------------


def _recorded(loop: Loop, key: PartitionKey, end: int) -> None:
    """`end` events recorded on `key` (offsets 0 .. end - 1)."""
    loop.ledger.advance(key, end, recorded=end, last_recorded=end - 1)


def test_handover_waits_for_a_covering_scrape_then_commits() -> None:
    loop = make_loop(handover_timeout_s=2.0)
    loop.source.assign([P0, P1])
    _recorded(loop, P0, 10)
    _recorded(loop, P1, 3)
    assert (loop.health.assigned, loop.sample("usage_consumer_assigned_partitions")) == (2, 2.0)

    began = time.monotonic()
    scraper = threading.Timer(0.03, lambda: loop.ledger.cover(loop.ledger.snapshot()))
    scraper.start()
    try:
        loop.source.revoke([P0, P1])
    finally:
        scraper.join()
    # The revocation could not finish before the scrape; its own clock starts a moment after
    # the scraper's, so the observed wait is bounded by the whole span, not by the 0.03 s.
    span = time.monotonic() - began

    # Nothing was covered before the wait, so the only commit is the one after the scrape.
    assert loop.consumer.attempts == [[(TOPIC, 0, 10), (TOPIC, 1, 3)]]
    assert loop.consumer.committed == loop.consumer.attempts
    assert loop.sample("usage_consumer_revocations_total", outcome="covered") == 2.0
    for outcome in ("timeout", "commit_failed", "lost"):
        assert loop.sample("usage_consumer_revocations_total", outcome=outcome) is None
    assert loop.sample("usage_consumer_revocation_wait_seconds_count") == 1.0
    wait = loop.sample("usage_consumer_revocation_wait_seconds_sum")
    assert wait is not None
    assert 0.0 < wait <= span < 2.0
    assert span >= 0.03
    assert loop.sample("usage_consumer_commits_total") == 1.0
    assert loop.ledger.states() == {}
    assert loop.ledger.pending([P0, P1]) == []
    assert (loop.health.assigned, loop.sample("usage_consumer_assigned_partitions")) == (0, 0.0)


def test_handover_already_covered_commits_at_once_without_waiting() -> None:
    loop = make_loop(handover_timeout_s=2.0)
    loop.source.assign([P0])
    _recorded(loop, P0, 7)
    loop.ledger.cover(loop.ledger.snapshot())  # a scrape before the revocation

    loop.source.revoke([P0])

    assert loop.consumer.committed == [[(TOPIC, 0, 7)]]  # the early commit; nothing left after
    assert loop.sample("usage_consumer_revocations_total", outcome="covered") == 1.0
    wait = loop.sample("usage_consumer_revocation_wait_seconds_sum")
    assert wait is not None
    assert wait < 0.5
    assert loop.ledger.states() == {}


def test_handover_times_out_and_commits_only_what_earlier_scrapes_covered() -> None:
    loop = make_loop(handover_timeout_s=0.05)
    loop.source.assign([P0, P1])
    _recorded(loop, P0, 10)
    loop.ledger.cover(loop.ledger.snapshot())  # covers P0 up to 10
    loop.ledger.advance(P0, 15, recorded=5, last_recorded=14)  # never scraped
    _recorded(loop, P1, 4)  # never scraped

    loop.source.revoke([P0, P1])

    assert loop.consumer.committed == [[(TOPIC, 0, 10)]]  # early commit; the final one: nothing
    assert loop.sample("usage_consumer_revocations_total", outcome="timeout") == 2.0
    assert loop.sample("usage_consumer_revocations_total", outcome="covered") is None
    wait = loop.sample("usage_consumer_revocation_wait_seconds_sum")
    assert wait is not None
    assert 0.05 <= wait < 1.0
    assert loop.ledger.states() == {}


def test_handover_whose_commit_raises_rebalance_in_progress_counts_commit_failed() -> None:
    rebalancing = KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
    loop = make_loop(consumer=FakeConsumer([rebalancing, rebalancing]))
    loop.source.assign([P0, P1])
    _recorded(loop, P0, 10)
    _recorded(loop, P1, 2)
    loop.ledger.cover(loop.ledger.snapshot())

    loop.source.revoke([P0, P1])

    # Tried before the wait and after it, both refused.
    assert loop.consumer.attempts == [[(TOPIC, 0, 10), (TOPIC, 1, 2)]] * 2
    assert loop.consumer.committed == []
    assert loop.sample("usage_consumer_revocations_total", outcome="commit_failed") == 2.0
    assert loop.sample("usage_consumer_revocations_total", outcome="covered") is None
    assert loop.sample("usage_consumer_commit_failures_total") == 2.0
    assert loop.sample("usage_consumer_commits_total") == 0.0
    assert loop.ledger.states() == {}


def test_handover_whose_commit_result_carries_an_error_counts_commit_failed() -> None:
    generation = KafkaError(KafkaError.ILLEGAL_GENERATION)
    results: list[TopicPartition] = [
        TopicPartition(TOPIC, 0, 10),
        FailedPartition(TOPIC, 1, 2, generation),
    ]
    # The early commit succeeds; the one after the wait comes back with a partition's error.
    loop = make_loop(handover_timeout_s=2.0, consumer=FakeConsumer([None, results]))
    loop.source.assign([P0, P1])
    _recorded(loop, P0, 6)
    loop.ledger.cover(loop.ledger.snapshot())
    _recorded(loop, P0, 10)
    _recorded(loop, P1, 2)
    scraper = threading.Timer(0.02, lambda: loop.ledger.cover(loop.ledger.snapshot()))
    scraper.start()
    try:
        loop.source.revoke([P0, P1])
    finally:
        scraper.join()

    assert loop.consumer.attempts == [[(TOPIC, 0, 6)], [(TOPIC, 0, 10), (TOPIC, 1, 2)]]
    assert loop.consumer.committed == [[(TOPIC, 0, 6)]]
    assert loop.sample("usage_consumer_revocations_total", outcome="commit_failed") == 2.0
    assert loop.sample("usage_consumer_commit_failures_total") == 1.0
    assert loop.sample("usage_consumer_commits_total") == 1.0
    assert loop.ledger.states() == {}


def test_lost_partitions_are_released_without_any_commit() -> None:
    loop = make_loop()
    loop.source.assign([P0, P1])
    _recorded(loop, P0, 10)
    loop.ledger.cover(loop.ledger.snapshot())
    assert [(tp.partition, tp.offset) for tp in loop.ledger.pending()] == [(0, 10)]

    loop.source.revoke([P0, P1], lost=True)

    assert loop.consumer.attempts == []
    assert loop.sample("usage_consumer_revocations_total", outcome="lost") == 2.0
    assert loop.sample("usage_consumer_revocation_wait_seconds_count") == 0.0
    assert loop.ledger.states() == {}
    assert loop.ledger.pending() == []
    assert loop.health.assigned == 0


def test_handover_in_record_mode_stops_at_an_unacknowledged_dead_letter() -> None:
    loop = make_loop("record", handover_timeout_s=0.05)
    loop.source.assign([P0])
    loop.producer.stalled = True
    loop.sink.send(letter(0, 4))
    loop.ledger.advance(P0, 9, recorded=8, last_recorded=8)

    loop.source.revoke([P0])

    # Record mode waits for no scrape: committed up to the held dead letter, outcome "covered".
    assert loop.consumer.committed == [[(TOPIC, 0, 4)]]
    assert loop.sample("usage_consumer_revocations_total", outcome="covered") == 1.0
    assert loop.ledger.states() == {}
    assert loop.sink.blocked() == set()


# --- 3. pause and resume decisions -----------------------------------------------------------


def _paused_gauge(loop: Loop, key: PartitionKey, reason: str) -> float | None:
    return loop.sample(
        "usage_consumer_partition_paused", topic=key[0], partition=str(key[1]), reason=reason
    )


def test_backpressure_by_count_pauses_every_partition_until_a_scrape() -> None:
    loop = make_loop(max_events=5)
    loop.source.assign([P0, P1])
    _recorded(loop, P0, 3)
    loop.pauses.apply(loop.source)
    assert loop.source.paused == set()
    assert loop.health.ready() == (True, "ok: 2 partitions assigned")
    assert loop.sample("usage_consumer_backpressure") == 0.0

    _recorded(loop, P1, 2)  # 5 unscraped: the limit
    loop.pauses.apply(loop.source)
    assert loop.source.paused == {P0, P1}
    assert loop.pauses.reasons == {P0: "backpressure", P1: "backpressure"}
    assert loop.health.not_ready == {
        "backpressure": "5 recorded events wait for a scrape (limit 5)"
    }
    assert loop.health.ready() == (
        False,
        "backpressure: 5 recorded events wait for a scrape (limit 5)",
    )
    assert loop.sample("usage_consumer_backpressure") == 1.0
    assert loop.sample("usage_consumer_pauses_total", reason="backpressure") == 1.0
    assert _paused_gauge(loop, P0, "backpressure") == 1.0
    assert _paused_gauge(loop, P1, "backpressure") == 1.0

    # Still over: the reason text follows, the pause is not counted again, nothing re-paused.
    calls = loop.source.pause_calls
    loop.ledger.advance(P1, 3, recorded=1, last_recorded=2)
    loop.pauses.apply(loop.source)
    assert loop.health.not_ready == {
        "backpressure": "6 recorded events wait for a scrape (limit 5)"
    }
    assert loop.sample("usage_consumer_pauses_total", reason="backpressure") == 1.0
    assert loop.source.pause_calls == calls

    loop.scrape()
    loop.pauses.apply(loop.source)
    assert loop.source.paused == set()
    assert loop.pauses.reasons == {}
    assert loop.health.not_ready == {}
    assert loop.sample("usage_consumer_backpressure") == 0.0
    assert _paused_gauge(loop, P0, "backpressure") == 0.0
    assert _paused_gauge(loop, P1, "backpressure") == 0.0
    assert loop.sample("usage_consumer_pauses_total", reason="backpressure") == 1.0
    assert loop.sample("usage_consumer_scrapes_total") == 1.0


def test_backpressure_by_age_of_the_oldest_unscraped_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(ledger_module, "time", clock)
    loop = make_loop(max_events=1_000, max_age_s=300.0)
    loop.source.assign([P0, P1])
    _recorded(loop, P0, 1)
    clock.now += 299.0
    _recorded(loop, P1, 1)
    loop.pauses.apply(loop.source)
    assert loop.source.paused == set()

    clock.now += 1.0  # the P0 event is 300 s old
    loop.pauses.apply(loop.source)
    assert loop.source.paused == {P0, P1}
    assert loop.health.not_ready == {
        "backpressure": "oldest unscraped event is 300s old (limit 300s)"
    }
    assert loop.sample("usage_consumer_pauses_total", reason="backpressure") == 1.0

    # A scrape that covered only P0 leaves P1's event, 1 s old: resumed.
    snapshot = loop.ledger.snapshot()
    del snapshot.positions[P1]
    loop.ledger.cover(snapshot)
    loop.pauses.apply(loop.source)
    assert loop.source.paused == set()
    assert loop.health.not_ready == {}
    assert loop.ledger.unscraped() == (1, 1.0)


def test_record_mode_never_pauses_for_backpressure() -> None:
    loop = make_loop("record", max_events=1, max_age_s=0.0)
    loop.source.assign([P0, P1])
    _recorded(loop, P0, 50)
    loop.pauses.apply(loop.source)
    assert loop.source.paused == set()
    assert loop.pauses.reasons == {}
    assert loop.health.not_ready == {}
    assert loop.sample("usage_consumer_backpressure") == 0.0
    assert loop.sample("usage_consumer_pauses_total", reason="backpressure") is None
    assert _paused_gauge(loop, P0, "backpressure") is None


def test_a_failing_dead_letter_pauses_only_its_partition_until_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(deadletter_module, "time", clock)
    producer = FakeProducer(failures=[KafkaError(KafkaError._MSG_TIMED_OUT)])
    loop = make_loop(producer=producer)
    loop.source.assign([P0, P1])
    loop.sink.send(letter(1, 3))
    loop.sink.service()  # the delivery report: failed
    loop.pauses.apply(loop.source)

    holding = "writes to usage.dlq failing; holding usage/1"
    assert loop.source.paused == {P1}
    assert loop.pauses.reasons == {P1: "dead_letter"}
    assert loop.health.not_ready == {"dead_letter": holding}
    assert loop.health.ready() == (False, f"dead_letter: {holding}")
    assert loop.sample("usage_consumer_pauses_total", reason="dead_letter") == 1.0
    assert _paused_gauge(loop, P1, "dead_letter") == 1.0
    assert _paused_gauge(loop, P0, "dead_letter") is None
    assert loop.sample("usage_consumer_backpressure") == 0.0

    clock.now += 1.0  # the default back-off
    loop.sink.service()  # retried, in flight: still blocked
    loop.pauses.apply(loop.source)
    assert len(loop.producer.produced) == 2
    assert loop.source.paused == {P1}
    loop.sink.service()  # acknowledged
    loop.pauses.apply(loop.source)
    assert loop.source.paused == set()
    assert loop.pauses.reasons == {}
    assert loop.health.not_ready == {}
    assert loop.health.ready() == (True, "ok: 2 partitions assigned")
    assert _paused_gauge(loop, P1, "dead_letter") == 0.0
    assert loop.sample("usage_consumer_pauses_total", reason="dead_letter") == 1.0


def test_a_dead_letter_failing_under_backpressure_keeps_its_partition_paused_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(deadletter_module, "time", clock)
    producer = FakeProducer(failures=[KafkaError(KafkaError._MSG_TIMED_OUT)])
    loop = make_loop(max_events=2, producer=producer)
    loop.source.assign([P0, P1])
    _recorded(loop, P0, 2)
    loop.sink.send(letter(1, 0))
    loop.sink.service()
    loop.pauses.apply(loop.source)
    assert loop.pauses.reasons == {P0: "backpressure", P1: "dead_letter"}
    assert set(loop.health.not_ready) == {"backpressure", "dead_letter"}
    assert _paused_gauge(loop, P1, "dead_letter") == 1.0
    assert _paused_gauge(loop, P1, "backpressure") is None

    loop.scrape()
    loop.pauses.apply(loop.source)
    assert loop.source.paused == {P1}
    assert loop.pauses.reasons == {P1: "dead_letter"}
    assert loop.health.not_ready == {"dead_letter": "writes to usage.dlq failing; holding usage/1"}
    assert _paused_gauge(loop, P0, "backpressure") == 0.0
    assert _paused_gauge(loop, P1, "dead_letter") == 1.0


def test_a_revoked_partitions_paused_gauge_is_not_recreated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(deadletter_module, "time", clock)
    producer = FakeProducer(failures=[KafkaError(KafkaError._MSG_TIMED_OUT)])
    loop = make_loop(producer=producer)
    loop.source.assign([P0, P1])
    loop.sink.send(letter(1, 3))
    loop.sink.service()
    loop.pauses.apply(loop.source)
    assert _paused_gauge(loop, P1, "dead_letter") == 1.0

    loop.source.revoke([P1])
    assert _paused_gauge(loop, P1, "dead_letter") is None  # dropped with the partition
    loop.pauses.apply(loop.source)

    assert _paused_gauge(loop, P1, "dead_letter") is None
    assert loop.source.paused == set()
    assert loop.pauses.reasons == {}
    assert loop.health.not_ready == {}
    assert loop.health.ready() == (True, "ok: 1 partitions assigned")


def test_a_partition_reassigned_between_two_steps_is_paused_again_under_backpressure() -> None:
    loop = make_loop(max_events=2)
    loop.source.assign([P0, P1])
    _recorded(loop, P0, 2)
    loop.pauses.apply(loop.source)
    assert loop.source.paused == {P0, P1}

    loop.source.revoke([P1])  # within one read_batch: revoked ...
    loop.source.assign([P1])  # ... and back again, unpaused
    loop.pauses.apply(loop.source)

    assert loop.source.paused == {P0, P1}
    assert _paused_gauge(loop, P1, "backpressure") == 1.0


def test_a_dead_letter_failing_after_its_partition_was_lost_pauses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(deadletter_module, "time", clock)
    producer = FakeProducer(failures=[KafkaError(KafkaError._MSG_TIMED_OUT)])
    loop = make_loop(producer=producer)
    loop.source.assign([P0, P1])
    loop.sink.send(letter(1, 3))  # in flight
    loop.source.revoke([P1], lost=True)  # no flush: lost partitions are not handed over

    loop.sink.service()  # the late delivery report: failed
    loop.pauses.apply(loop.source)
    clock.now += 1.0
    loop.sink.service()  # the retry sees the partition gone and drops the letter
    loop.pauses.apply(loop.source)

    assert len(loop.producer.produced) == 1
    assert loop.sink.blocked() == set()
    assert loop.health.not_ready == {}
    assert _paused_gauge(loop, P1, "dead_letter") is None


# --- 4. dead-letter retries ------------------------------------------------------------------


def test_a_failed_dead_letter_holds_its_offset_and_is_retried_after_the_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(deadletter_module, "time", clock)
    monkeypatch.setattr(deadletter_module, "_RETRY_BACKOFF_S", 0.5)
    producer = FakeProducer(failures=[KafkaError(KafkaError._MSG_TIMED_OUT)] * 2)
    loop = make_loop("record", producer=producer)
    loop.source.assign([P0])
    original = letter(0, 4, b"{", _key=b"k", _headers=[("trace", b"t")])
    loop.sink.send(original)
    loop.ledger.advance(P0, 9, recorded=8, last_recorded=8)
    assert positions(loop.ledger, P0) == (9, 9, -1, 4, -1, 1)

    loop.sink.service()  # failure 1
    assert loop.sample("usage_consumer_dead_letter_failures_total") == 1.0
    assert loop.sink.blocked() == {P0}
    assert loop.ledger.is_held(P0)

    clock.now += 0.499
    loop.sink.service()  # the back-off is not over: not retried
    assert len(loop.producer.produced) == 1

    clock.now += 0.001
    loop.sink.service()  # retried
    assert len(loop.producer.produced) == 2
    loop.sink.service()  # failure 2: back-off again from now
    assert loop.sample("usage_consumer_dead_letter_failures_total") == 2.0
    clock.now += 0.499
    loop.sink.service()
    assert len(loop.producer.produced) == 2
    clock.now += 0.001
    loop.sink.service()  # retried once more
    assert len(loop.producer.produced) == 3
    assert loop.sink.blocked() == {P0}
    assert positions(loop.ledger, P0)[3:] == (4, -1, 1)

    loop.sink.service()  # delivered
    assert loop.sink.blocked() == set()
    assert positions(loop.ledger, P0)[3:] == (9, -1, 0)
    assert loop.sample("usage_consumer_dead_letters_total", reason="invalid_json") == 1.0
    assert loop.sample("usage_consumer_dead_letter_failures_total") == 2.0
    counts = loop.sink.recent.snapshot()["invalid_json"]
    assert (counts.rejected, counts.acknowledged, counts.failed) == (1, 1, 2)
    # Every attempt is the same letter: the original, unchanged, with the dlq.* headers.
    expected_headers = [
        ("trace", b"t"),
        ("dlq.reason", b"invalid_json"),
        ("dlq.detail", b"invalid JSON at byte 1"),
        ("dlq.source.topic", b"usage"),
        ("dlq.source.partition", b"0"),
        ("dlq.source.offset", b"4"),
    ]
    assert [(p.topic, p.key, p.value, p.headers, p.timestamp) for p in producer.produced] == [
        (DLQ, b"k", b"{", expected_headers, 1_714_564_800_000)
    ] * 3
    assert loop.committer.commit(as_consumer(loop.consumer)) == 1
    assert loop.consumer.committed == [[(TOPIC, 0, 9)]]


@pytest.mark.parametrize("refused_by", ["broker", "producer"])
def test_a_dead_letter_too_large_for_the_topic_is_resent_truncated(refused_by: str) -> None:
    size = TRUNCATED_VALUE_BYTES + 4_464
    if refused_by == "broker":  # a failed delivery report
        producer = FakeProducer(failures=[KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)])
    else:  # produce() refuses it before queuing
        producer = FakeProducer(max_value_bytes=TRUNCATED_VALUE_BYTES)
    loop = make_loop("record", producer=producer)
    loop.source.assign([P0])
    big = DeadLetter.of(
        cast(Message, msg(0, 2, b"y" * size, _key=b"k", _headers=[("trace", b"t")])),
        Rejection(Reason.TOO_LARGE, f"message value is {size} bytes, limit is 65536"),
    )
    loop.sink.send(big)
    loop.ledger.advance(P0, 3)
    loop.sink.service()
    loop.sink.service()

    truncated = loop.producer.produced[-1]
    assert len(loop.producer.produced) == (2 if refused_by == "broker" else 1)
    assert truncated.value == b"y" * TRUNCATED_VALUE_BYTES
    assert truncated.key == b"k"
    assert truncated.headers == [
        ("dlq.reason", b"too_large"),
        ("dlq.detail", f"message value is {size} bytes, limit is 65536".encode()),
        ("dlq.source.topic", b"usage"),
        ("dlq.source.partition", b"0"),
        ("dlq.source.offset", b"2"),
        ("dlq.value.truncated", b"true"),
        ("dlq.value.size", str(size).encode()),
    ]
    assert loop.sample("usage_consumer_dead_letter_failures_total") == 0.0
    assert loop.sample("usage_consumer_dead_letters_total", reason="too_large") == 1.0
    assert loop.sink.blocked() == set()
    assert positions(loop.ledger, P0)[3:] == (3, -1, 0)


def test_a_failed_dead_letter_of_a_revoked_partition_is_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(deadletter_module, "time", clock)
    monkeypatch.setattr(deadletter_module, "_RETRY_BACKOFF_S", 0.5)
    producer = FakeProducer(failures=[KafkaError(KafkaError._MSG_TIMED_OUT)] * 2)
    loop = make_loop("record", producer=producer)
    loop.source.assign([P0, P1])
    loop.sink.send(letter(0, 1))
    loop.sink.send(letter(1, 5))
    loop.ledger.advance(P0, 2)
    loop.ledger.advance(P1, 6)
    loop.sink.service()  # both fail
    assert loop.sink.blocked() == {P0, P1}

    loop.source.revoke([P1])  # the hand-over commits up to the failed letter, then forgets it
    assert loop.consumer.committed == [[(TOPIC, 1, 5)]]
    assert loop.sink.blocked() == {P0}

    clock.now += 0.5
    loop.sink.service()  # the back-off is over: only P0's letter goes again
    assert [(p.headers[-1], p.value) for p in loop.producer.produced] == [
        (("dlq.source.offset", b"1"), b"{"),
        (("dlq.source.offset", b"5"), b"{"),
        (("dlq.source.offset", b"1"), b"{"),
    ]
    loop.sink.service()  # delivered
    assert loop.sink.blocked() == set()
    assert loop.sample("usage_consumer_dead_letters_total", reason="invalid_json") == 1.0
    assert loop.sample("usage_consumer_dead_letter_failures_total") == 2.0


# --- 5. the worker loop, end to end with the fakes -------------------------------------------


@pytest.fixture
def usage_registry() -> Iterator[tuple[CollectorRegistry, TokenTracker]]:
    registry = CollectorRegistry()
    provider = build_meter_provider(registry, 100)
    yield registry, TokenTracker(provider.get_meter("t"))
    provider.shutdown()


def _worker(loop: Loop, tracker: TokenTracker) -> Worker:
    return Worker(
        source=cast(KafkaSource, loop.source),
        recorder=Recorder(tracker),
        dead_letters=loop.sink,
        ledger=loop.ledger,
        committer=loop.committer,
        rebalancer=loop.rebalancer,
        metrics=loop.metrics,
        health=loop.health,
        pauses=loop.pauses,
        spread=KeySpread(limit=100, every=1),
        batch_size=100,
        batch_wait_s=0.01,
        max_message_bytes=4096,
    )


def _first_batch() -> list[FakeMessage]:
    return [
        msg(0, 0, event(EVENT_A)),
        msg(0, 1, event(EVENT_B)),
        msg(0, 2, b"{oops"),
        msg(0, 3, event(EVENT_A, event_id="evt-a2")),
        msg(1, 0, event(EVENT_A, event_id="evt-a3", input_tokens=1, output_tokens=2)),
        msg(1, 1, b""),
    ]


def test_worker_round_trip_in_scrape_mode_commits_only_what_a_scrape_covered(
    usage_registry: tuple[CollectorRegistry, TokenTracker],
) -> None:
    registry, tracker = usage_registry
    loop = make_loop("scrape", handover_timeout_s=2.0, registry=registry)
    worker = _worker(loop, tracker)
    loop.source.assign([P0, P1])
    loop.source.batches.append(_first_batch())

    worker.step()

    assert loop.source.reads == [(100, 0.01)]
    assert loop.sample("usage_consumer_messages_consumed_total") == 6.0
    assert loop.sample("usage_consumer_events_recorded_total") == 4.0
    assert loop.sample("usage_consumer_messages_rejected_total", reason="invalid_json") == 1.0
    assert loop.sample("usage_consumer_messages_rejected_total", reason="empty") == 1.0
    assert loop.sample("usage_consumer_dead_letters_total", reason="invalid_json") == 1.0
    assert loop.sample("usage_consumer_dead_letters_total", reason="empty") == 1.0
    assert loop.sample("usage_consumer_batches_total") == 1.0
    assert loop.sample("usage_consumer_batch_size_sum") == 6.0
    assert loop.sample("llm_request_count_total", **LABELS_A) == 3.0
    assert loop.sample("llm_request_count_total", **LABELS_B) == 1.0
    assert loop.sample("llm_token_usage_input_total", **LABELS_A) == 201.0
    assert loop.sample("llm_token_total", **LABELS_A) == 243.0
    assert loop.sample("llm_request_errors_total", **LABELS_B) == 1.0
    # Recorded and dead-lettered, but no scrape yet: nothing committed.
    assert loop.consumer.attempts == []
    assert positions(loop.ledger, P0) == (4, 4, -1, -1, -1, 0)
    assert positions(loop.ledger, P1) == (2, 1, -1, -1, -1, 0)
    assert loop.sample("usage_consumer_unscraped_events") == 4.0

    body = loop.scrape()
    assert b"llm_request_count_total{" in body
    # The scrape's cover wakes a waiting read, so the commit follows at once.
    assert loop.ledger.covered_signal.is_set()
    worker.step()
    assert loop.source.wakes[-1] is loop.ledger.covered_signal
    assert not loop.ledger.covered_signal.is_set()
    assert loop.consumer.committed == [[(TOPIC, 0, 4), (TOPIC, 1, 2)]]
    assert loop.sample("usage_consumer_commits_total") == 1.0
    assert loop.sample("usage_consumer_scrapes_total") == 1.0
    assert loop.sample("usage_consumer_partition_committed_offset", topic=TOPIC, partition="0") == (
        4.0
    )
    assert loop.sample("usage_consumer_unscraped_events") == 0.0
    worker.step()  # nothing moved: no commit
    assert len(loop.consumer.attempts) == 1

    loop.source.batches.append([msg(0, 4, event(EVENT_B, event_id="evt-b2"))])
    worker.step()
    assert len(loop.consumer.attempts) == 1
    assert positions(loop.ledger, P0) == (5, 5, 4, 4, 4, 0)

    # Shutdown: the hand-over waits for a scrape, commits, then the close revokes (no wait).
    scraper = threading.Timer(0.03, loop.scrape)
    scraper.start()
    try:
        worker.shutdown()
    finally:
        scraper.join()
    assert loop.consumer.committed == [[(TOPIC, 0, 4), (TOPIC, 1, 2)], [(TOPIC, 0, 5)]]
    assert loop.sample("usage_consumer_revocations_total", outcome="covered") == 2.0
    assert loop.sample("usage_consumer_revocation_wait_seconds_count") == 1.0
    assert loop.sample("llm_request_count_total", **LABELS_B) == 2.0
    assert loop.source.closed
    assert loop.ledger.states() == {}
    assert loop.health.assigned == 0


def test_worker_round_trip_in_record_mode_commits_at_once_up_to_unacknowledged_letters(
    usage_registry: tuple[CollectorRegistry, TokenTracker],
) -> None:
    registry, tracker = usage_registry
    loop = make_loop("record", registry=registry)
    worker = _worker(loop, tracker)
    loop.source.assign([P0, P1])
    loop.source.batches.append(_first_batch())
    loop.producer.stalled = True  # the dead letters are not acknowledged yet

    worker.step()
    assert loop.consumer.committed == [[(TOPIC, 0, 2), (TOPIC, 1, 1)]]
    assert loop.sample("llm_request_count_total", **LABELS_A) == 3.0
    assert loop.sample("usage_consumer_dead_letters_total", reason="invalid_json") is None

    loop.producer.stalled = False
    worker.step()
    assert loop.consumer.committed == [
        [(TOPIC, 0, 2), (TOPIC, 1, 1)],
        [(TOPIC, 0, 4), (TOPIC, 1, 2)],
    ]
    assert loop.sample("usage_consumer_scrapes_total") == 0.0
    assert loop.sample("usage_consumer_commits_total") == 2.0
    assert loop.sample("usage_consumer_dead_letters_total", reason="invalid_json") == 1.0
    assert loop.sample("usage_consumer_dead_letters_total", reason="empty") == 1.0

    # run(): subscribe, step until stopped (here: once the next batch is read), hand over, close.
    loop.source.batches.append([msg(0, 4, event(EVENT_A, event_id="evt-a4"))])
    stop = threading.Event()
    loop.source.drained = stop
    worker.run(stop)
    assert loop.source.subscribed
    assert loop.source.closed
    assert len(loop.source.reads) == 3
    assert loop.consumer.committed[2:] == [[(TOPIC, 0, 5)]]  # by the step; nothing left after
    assert loop.sample("llm_request_count_total", **LABELS_A) == 4.0
    assert loop.sample("usage_consumer_revocations_total", outcome="covered") == 2.0
    assert loop.ledger.states() == {}


def test_worker_step_survives_a_failed_commit_and_retries_it_next_step(
    usage_registry: tuple[CollectorRegistry, TokenTracker],
) -> None:
    registry, tracker = usage_registry
    failure = KafkaException(KafkaError(KafkaError.REQUEST_TIMED_OUT))
    loop = make_loop("record", registry=registry, consumer=FakeConsumer([failure]))
    worker = _worker(loop, tracker)
    loop.source.assign([P0])
    loop.source.batches.append([msg(0, 0, event(EVENT_A)), msg(0, 1, event(EVENT_B))])

    worker.step()
    assert loop.consumer.attempts == [[(TOPIC, 0, 2)]]
    assert loop.consumer.committed == []
    assert loop.sample("usage_consumer_commit_failures_total") == 1.0
    assert positions(loop.ledger, P0)[3:] == (2, -1, 0)

    worker.step()
    assert loop.consumer.attempts == [[(TOPIC, 0, 2)], [(TOPIC, 0, 2)]]
    assert loop.consumer.committed == [[(TOPIC, 0, 2)]]
    assert loop.sample("usage_consumer_commits_total") == 1.0
    assert positions(loop.ledger, P0)[3:] == (2, 2, 0)


@pytest.mark.parametrize("mode", ["scrape", "record"])
def test_worker_expires_idle_series_between_batches_once_a_scrape_has_them(
    mode: CommitMode,
) -> None:
    registry = CollectorRegistry()
    provider = build_meter_provider(registry, 100)
    tracker = TokenTracker(provider.get_meter("t"))
    loop = make_loop(mode, registry=registry)
    worker = _worker(loop, tracker)
    worker.expiry = SeriesExpiry(provider, 10.0, interval_s=0.0)
    loop.source.assign([P0])
    loop.source.batches.append([msg(0, 0, event(EVENT_A)), msg(0, 1, event(EVENT_B))])
    worker.step()
    start = time.monotonic()
    worker.expire_idle_series(start)  # first sight of both sets

    worker.expire_idle_series(start + 20)  # idle long enough
    if mode == "scrape":
        # ... but no scrape has their values yet: they stay.
        assert loop.sample("llm_request_count_total", **LABELS_A) == 1.0
        assert loop.sample("usage_consumer_series_expired_total", metric=COUNT) is None
        loop.scrape()  # taken after the sweep that saw them
        worker.expire_idle_series(start + 20)

    assert loop.sample("llm_request_count_total", **LABELS_A) is None
    assert loop.sample("llm_request_count_total", **LABELS_B) is None
    assert loop.sample("usage_consumer_series_expired_total", metric=COUNT) == 2.0
    assert loop.sample("usage_consumer_series_expired_total", metric="llm_token_total") == 2.0
    assert loop.sample("usage_consumer_series_expired_total", metric=ERRORS) == 1.0

    # A set that comes back starts from zero, through the tracker's fast path again.
    loop.source.batches.append([msg(0, 2, event(EVENT_A, event_id="evt-a2"))])
    worker.step()
    loop.source.batches.append([msg(0, 3, event(EVENT_A, event_id="evt-a3"))])
    worker.step()
    # (No series has an error code now, so the family has no llm_error_code label.)
    alone = {k: v for k, v in LABELS_A.items() if k != "llm_error_code"}
    assert loop.sample("llm_request_count_total", **alone) == 2.0
    assert loop.sample("usage_consumer_metric_series", metric=COUNT) == 1.0
    provider.shutdown()


COUNT = "llm_request_count_total"
ERRORS = "llm_request_errors_total"


def test_a_scrape_holds_exactly_the_events_its_snapshot_covers_while_the_worker_records() -> None:
    """The collect window: a scrape snapshots the ledger and collects the SDK under the record
    gate, so the requests in its response are exactly the offsets it covers, however the
    worker's batches and the scrapes interleave (without the gate, a batch recorded between the
    snapshot and the collect is in the response but not covered, and replayed after a crash)."""
    registry = CollectorRegistry()
    provider, reader = build_usage(registry, 100)
    tracker = TokenTracker(provider.get_meter("t"))
    loop = make_loop("scrape", registry=registry)
    worker = _worker(loop, tracker)
    loop.source.assign([P0])
    acknowledger = ScrapeAcknowledger(
        loop.ledger, loop.metrics, gate=worker.record_gate, reader=reader
    )
    batches, size = 300, 20
    done = threading.Event()

    def record() -> None:
        for b in range(batches):
            offsets = range(b * size, (b + 1) * size)
            worker.process([msg(0, o, event(EVENT_A, event_id=f"e{o}")) for o in offsets])
        done.set()

    recorder = threading.Thread(target=record)
    recorder.start()
    renderer = TextRenderer()
    seen: list[tuple[int, float]] = []
    while not done.is_set() or not seen:
        token = acknowledger.before_collect()
        text = renderer.render(registry).decode()
        acknowledger.after_response(token)
        assert isinstance(token, ScrapeSnapshot)
        covered = token.positions[P0][1] if P0 in token.positions else -1
        requests = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("llm_request_count_total{")
        )
        seen.append((covered, requests))
    recorder.join()
    assert all(requests == max(covered, 0) for covered, requests in seen), [
        s for s in seen if s[1] != max(s[0], 0)
    ][:5]
    assert len(seen) >= 3  # the scrapes did interleave with the batches
    provider.shutdown()


def test_split_counts_the_unknown_fields_of_valid_events_or_rejects_them() -> None:
    camel = event(EVENT_A, inputTokens=7, outputTokens=1)
    messages = [msg(0, 1, camel), msg(0, 2, event(EVENT_A)), msg(0, 3, event(EVENT_B, x=1))]
    ignored = split(as_messages(messages), 4096)
    assert len(ignored.events) == 3
    assert ignored.unknown_fields == {"inputTokens": 1, "outputTokens": 1, "x": 1}
    rejected = split(as_messages(messages), 4096, "reject")
    assert [(d.offset, d.rejection.reason) for d in rejected.rejected] == [
        (1, Reason.UNKNOWN_FIELD),
        (3, Reason.UNKNOWN_FIELD),
    ]
    assert rejected.rejected[0].rejection.detail == (
        "unknown fields: inputTokens (did you mean input_tokens?), "
        "outputTokens (did you mean output_tokens?)"
    )
    assert rejected.unknown_fields == {}


def test_the_unknown_field_counter_labels_at_most_a_hundred_names() -> None:
    metrics = WorkerMetrics.create(CollectorRegistry())
    for n in range(105):
        metrics.count_unknown_field(f"f{n}", 2)
    metrics.count_unknown_field("bad\nname", 1)
    samples = {
        s.labels["field"]: s.value
        for f in metrics.unknown_fields.collect()
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert len(samples) == 101
    assert samples["f99"] == 2.0
    assert samples["_other"] == 11.0  # f100..f104 twice each, and the unprintable name
