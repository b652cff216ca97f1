"""The worker loop: read a batch, validate, record, dead-letter, commit; repeat until stopped.

Everything it uses is built elsewhere (consumer.cli) and handed in; this module only orders the
stages and reacts to rebalances.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from confluent_kafka import Consumer, Message

from consumer.batch import split
from consumer.commit import Committer, OffsetLedger, PartitionKey
from consumer.deadletter import DeadLetterSink
from consumer.errors import CommitError
from consumer.metrics import WorkerMetrics
from consumer.record import Recorder
from consumer.serve import HealthState
from consumer.source import KafkaSource

__all__ = ["Rebalancer", "Worker"]

log = logging.getLogger(__name__)


@dataclass
class Rebalancer:
    """Commits what it may before a partition is given up; forgets what it no longer owns."""

    ledger: OffsetLedger
    committer: Committer
    dead_letters: DeadLetterSink
    metrics: WorkerMetrics
    health: HealthState
    handover_timeout_s: float

    def on_assigned(self, consumer: Consumer, keys: list[PartitionKey]) -> None:
        self.ledger.assign(keys)
        self._count(len(keys))

    def on_revoked(self, consumer: Consumer, keys: list[PartitionKey], lost: bool) -> None:
        if not lost:
            # Dead letters still in flight hold their partitions back; give them a chance.
            self.dead_letters.flush(self.handover_timeout_s)
            self.dead_letters.service()
            try:
                self.committer.commit(consumer, keys)
            except CommitError as exc:
                log.error("could not commit before hand-over: %s", exc)
        self.ledger.revoke(keys)
        self.dead_letters.forget(set(keys))
        for topic, partition in keys:
            self.metrics.forget_partition(topic, partition)
        self._count(-len(keys))

    def _count(self, delta: int) -> None:
        self.health.assigned = max(0, self.health.assigned + delta)
        self.metrics.assigned_partitions.set(self.health.assigned)


@dataclass
class Worker:
    source: KafkaSource
    recorder: Recorder
    dead_letters: DeadLetterSink
    ledger: OffsetLedger
    committer: Committer
    metrics: WorkerMetrics
    health: HealthState
    batch_size: int
    batch_wait_s: float
    max_message_bytes: int
    shutdown_timeout_s: float

    def run(self, stop: threading.Event) -> None:
        self.source.subscribe()
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.shutdown()

    def step(self) -> None:
        self.health.beat()
        messages = self.source.read_batch(self.batch_size, self.batch_wait_s)
        if messages:
            self.process(messages)
        self.dead_letters.service()
        self._hold_blocked_partitions()
        try:
            self.committer.commit(self.source.consumer)
        except CommitError as exc:
            # Not fatal: the positions stay pending and the next step tries again.
            log.warning("%s", exc)

    def process(self, messages: list[Message]) -> None:
        batch = split(messages, self.max_message_bytes)
        self.metrics.consumed.inc(batch.size)
        self.metrics.recorded.inc(self.recorder.record(batch.events))
        for letter in batch.rejected:
            self.metrics.rejected.labels(letter.rejection.reason.value).inc()
            self.dead_letters.send(letter)  # holds its offset until the broker acknowledges
        for key, end in batch.ends.items():
            self.ledger.advance(key, end)
        self.metrics.batches.inc()
        self.metrics.batch_size.observe(batch.size)

    def _hold_blocked_partitions(self) -> None:
        """A partition whose dead letters fail stops reading (bounded memory) and says so."""
        blocked = self.dead_letters.blocked()
        self.source.pause(blocked)
        self.source.resume(self.source.paused - blocked)
        if blocked:
            names = ", ".join(f"{t}/{p}" for t, p in sorted(blocked))
            self.health.not_ready["dead_letter"] = (
                f"writes to {self.dead_letters.topic} failing; holding {names}"
            )
        else:
            self.health.not_ready.pop("dead_letter", None)

    def shutdown(self) -> None:
        """Finish what is in hand: wait for dead letters, commit, leave the group."""
        remaining = self.dead_letters.flush(self.shutdown_timeout_s)
        self.dead_letters.service()
        if remaining:
            log.warning("%d dead letters unacknowledged at shutdown; not committed", remaining)
        try:
            self.committer.commit(self.source.consumer)
        except CommitError as exc:
            log.error("final commit failed: %s", exc)
        self.source.close()
        log.info("left the group")
