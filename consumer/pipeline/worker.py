"""The worker loop: read a batch, validate, record, dead-letter, commit; repeat until stopped.

Everything it uses is built elsewhere (consumer.app) and handed in; this module only orders the
stages. Hand-overs live in consumer.pipeline.rebalance, pause decisions in
consumer.pipeline.pausing.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from confluent_kafka import Message

from consumer.errors import CommitError
from consumer.exposition.self_metrics import WorkerMetrics
from consumer.kafka.source import KafkaSource
from consumer.pipeline.batch import split
from consumer.pipeline.commit import Committer
from consumer.pipeline.deadletter import DeadLetterSink
from consumer.pipeline.health import HealthState
from consumer.pipeline.ledger import OffsetLedger
from consumer.pipeline.pausing import PauseManager
from consumer.pipeline.rebalance import Rebalancer
from consumer.pipeline.spread import KeySpread
from consumer.pipeline.validate import UnknownFields
from consumer.usage.expiry import SeriesExpiry
from consumer.usage.record import Recorder

__all__ = ["Worker"]

log = logging.getLogger(__name__)


@dataclass
class Worker:
    source: KafkaSource
    recorder: Recorder
    dead_letters: DeadLetterSink
    ledger: OffsetLedger
    committer: Committer
    rebalancer: Rebalancer
    metrics: WorkerMetrics
    health: HealthState
    pauses: PauseManager
    spread: KeySpread
    batch_size: int
    batch_wait_s: float
    max_message_bytes: int
    expiry: SeriesExpiry | None = None
    unknown_fields: UnknownFields = "ignore"
    # Held while a batch is recorded and the ledger advanced; a scrape's snapshot and collect
    # take it too (consumer.pipeline.commit.ScrapeAcknowledger).
    record_gate: AbstractContextManager[object] = field(default_factory=threading.Lock)

    def run(self, stop: threading.Event) -> None:
        self.source.subscribe()
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.shutdown()

    def step(self) -> None:
        self.health.beat()
        # A completed scrape cuts the wait short: what it covered is committed at once, so a
        # crash replays (and counts twice) as little as possible.
        wake = self.ledger.covered_signal if self.ledger.mode == "scrape" else None
        messages = self.source.read_batch(self.batch_size, self.batch_wait_s, wake)
        if messages:
            self.process(messages)
        self.dead_letters.service()
        self.pauses.apply(self.source)
        if self.expiry is not None:
            self.expire_idle_series(time.monotonic())
        self.ledger.covered_signal.clear()  # a cover from here on wakes the next read
        try:
            self.committer.commit(self.source.consumer)
        except CommitError as exc:
            # Not fatal: the positions stay pending and the next step tries again.
            log.warning("%s", exc)

    def process(self, messages: list[Message]) -> None:
        batch = split(messages, self.max_message_bytes, self.unknown_fields)
        self.metrics.consumed.inc(batch.size)
        for name, count in batch.unknown_fields.items():
            self.metrics.count_unknown_field(name, count)
        self.spread.observe(batch.events, batch.event_partitions)
        for letter in batch.rejected:
            self.metrics.rejected.labels(letter.rejection.reason.value).inc()
            self.dead_letters.send(letter)  # holds its offset until the broker acknowledges
        # Record and advance as one step for a scrape: its snapshot and collect see both or
        # neither.
        with self.record_gate:
            recorded = self.recorder.record(batch.events)
            for key, span in batch.spans.items():
                self.ledger.advance(key, span.end, span.recorded, span.last_recorded)
        self.metrics.recorded.inc(recorded)
        self.metrics.batches.inc()
        self.metrics.batch_size.observe(batch.size)

    def expire_idle_series(self, now: float) -> None:
        """Between batches, on the recording thread: drop usage series idle for the TTL (in
        scrape mode only once a completed scrape has their last value)."""
        expiry = self.expiry
        if expiry is None or not expiry.due(now):
            return
        covered_at = self.ledger.covered_at() if self.ledger.mode == "scrape" else None
        sweep = expiry.sweep(now, covered_at)
        self.recorder.forget(sweep.stale)
        for metric, count in sweep.expired.items():
            self.metrics.series_expired.labels(metric).inc(count)
        if sweep.expired:
            log.info(
                "expired %d usage series idle for %.0fs or more",
                sum(sweep.expired.values()),
                expiry.ttl_s,
            )

    def shutdown(self) -> None:
        """Hand everything over (dead letters, a covering scrape, the commit), then leave."""
        self.rebalancer.leave(self.source.consumer, sorted(self.source.assignment))
        self.source.close()
        log.info("left the group")
