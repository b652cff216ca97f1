"""The worker loop: read a batch, validate, record, dead-letter, commit; repeat until stopped.

Everything it uses is built elsewhere (consumer.cli) and handed in; this module only orders the
stages, applies backpressure, and reacts to rebalances.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Message

from consumer.batch import split
from consumer.commit import Committer, OffsetLedger, PartitionKey
from consumer.deadletter import DeadLetterSink
from consumer.errors import CommitError
from consumer.metrics import WorkerMetrics
from consumer.record import Recorder
from consumer.serve import HealthState
from consumer.source import KafkaSource

__all__ = ["Backpressure", "Rebalancer", "Worker"]

log = logging.getLogger(__name__)


@dataclass
class Rebalancer:
    """Hands partitions over cleanly: a scrape covers them, they are committed, then released."""

    ledger: OffsetLedger
    committer: Committer
    dead_letters: DeadLetterSink
    metrics: WorkerMetrics
    health: HealthState
    handover_timeout_s: float
    leaving: bool = False

    def on_assigned(self, consumer: Consumer, keys: list[PartitionKey]) -> None:
        self.ledger.assign(keys)
        self._count(len(keys))

    def on_revoked(self, consumer: Consumer, keys: list[PartitionKey], lost: bool) -> None:
        if lost:
            # Another member may own them already: committing now could go backwards.
            self.metrics.revocations.labels("lost").inc(len(keys))
        elif self.leaving:
            # Handed over before close() (see leave); a closing member no longer heartbeats,
            # so this is no time to wait.
            self._commit(consumer, keys)
        else:
            self.hand_over(consumer, keys)
        self.ledger.revoke(keys)
        self.dead_letters.forget(set(keys))
        for topic, partition in keys:
            self.metrics.forget_partition(topic, partition)
        self._count(-len(keys))

    def leave(self, consumer: Consumer, keys: list[PartitionKey]) -> None:
        """Hand everything over while still a live member, before close() revokes it."""
        if keys:
            self.hand_over(consumer, keys)
        self.leaving = True

    def hand_over(self, consumer: Consumer, keys: list[PartitionKey]) -> None:
        started = time.monotonic()
        # Commit what earlier scrapes covered right away: if the group moves on while this
        # member waits (another rebalance, a lost session), less is left to replay.
        self._commit(consumer, keys)
        # Dead letters still in flight hold their partitions back; give them a chance.
        unacknowledged = self.dead_letters.flush(self.handover_timeout_s)
        self.dead_letters.service()
        if unacknowledged:
            log.warning("%d dead letters unacknowledged: not committed past", unacknowledged)
        covered = True
        if self.ledger.mode == "scrape":
            remaining = max(0.0, self.handover_timeout_s - (time.monotonic() - started))
            covered = self.ledger.wait_covered(keys, remaining)
        waited = time.monotonic() - started
        self.metrics.revocation_wait.observe(waited)
        if not covered:
            log.warning(
                "no scrape covered %s within %.1fs: releasing them uncommitted past the last "
                "scrape; the next owner replays the rest",
                sorted(keys),
                self.handover_timeout_s,
            )
        committed = self._commit(consumer, keys)
        outcome = "commit_failed" if not committed else "covered" if covered else "timeout"
        self.metrics.revocations.labels(outcome).inc(len(keys))
        log.info("handed over %s after %.2fs (%s)", sorted(keys), waited, outcome)

    def _commit(self, consumer: Consumer, keys: list[PartitionKey]) -> bool:
        try:
            self.committer.commit(consumer, keys)
        except CommitError as exc:
            log.error("could not commit before hand-over: %s", exc)
            return False
        return True

    def _count(self, delta: int) -> None:
        self.health.assigned = max(0, self.health.assigned + delta)
        self.metrics.assigned_partitions.set(self.health.assigned)


@dataclass
class Backpressure:
    """Limits on what waits for a scrape: replay after a crash stays bounded."""

    max_events: int
    max_age_s: float

    def exceeded(self, ledger: OffsetLedger) -> str:
        """Why reading must pause, or "" when it may go on."""
        if ledger.mode != "scrape":
            return ""
        count, age = ledger.unscraped()
        if count >= self.max_events:
            return f"{count} recorded events wait for a scrape (limit {self.max_events})"
        if count and age >= self.max_age_s:
            return f"oldest unscraped event is {age:.0f}s old (limit {self.max_age_s:.0f}s)"
        return ""


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
    backpressure: Backpressure
    batch_size: int
    batch_wait_s: float
    max_message_bytes: int
    _pause_reasons: dict[PartitionKey, str] = field(default_factory=dict)

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
        self._apply_pauses()
        try:
            self.committer.commit(self.source.consumer)
        except CommitError as exc:
            # Not fatal: the positions stay pending and the next step tries again.
            log.warning("%s", exc)

    def process(self, messages: list[Message]) -> None:
        batch = split(messages, self.max_message_bytes)
        self.metrics.consumed.inc(batch.size)
        # Record before the ledger advances: a scrape's snapshot must never run ahead of what
        # its collect will contain.
        self.metrics.recorded.inc(self.recorder.record(batch.events))
        for letter in batch.rejected:
            self.metrics.rejected.labels(letter.rejection.reason.value).inc()
            self.dead_letters.send(letter)  # holds its offset until the broker acknowledges
        for key, span in batch.spans.items():
            self.ledger.advance(key, span.end, span.recorded, span.last_recorded)
        self.metrics.batches.inc()
        self.metrics.batch_size.observe(batch.size)

    def _apply_pauses(self) -> None:
        """Pause what must wait (failing dead letters, too much unscraped); resume the rest."""
        wanted: dict[PartitionKey, str] = {}
        why = self.backpressure.exceeded(self.ledger)
        if why:
            wanted = dict.fromkeys(self.source.assignment, "backpressure")
        self._set_condition("backpressure", why)
        blocked = self.dead_letters.blocked()
        wanted.update(dict.fromkeys(blocked, "dead_letter"))
        self._set_condition(
            "dead_letter",
            f"writes to {self.dead_letters.topic} failing; holding "
            + ", ".join(f"{t}/{p}" for t, p in sorted(blocked))
            if blocked
            else "",
        )
        if wanted == self._pause_reasons:
            return
        for key, reason in self._pause_reasons.items():
            # A revoked partition's gauges were dropped with it; do not bring them back.
            if wanted.get(key) != reason and key in self.source.assignment:
                self.metrics.partition_paused.labels(key[0], str(key[1]), reason).set(0)
        for key, reason in wanted.items():
            if self._pause_reasons.get(key) != reason:
                self.metrics.partition_paused.labels(key[0], str(key[1]), reason).set(1)
        self.source.pause(set(wanted))
        self.source.resume(self.source.paused - set(wanted))
        self._pause_reasons = wanted

    def _set_condition(self, name: str, why: str) -> None:
        was = name in self.health.not_ready
        if why and not was:
            self.health.not_ready[name] = why
            self.metrics.pauses.labels(name).inc()
            log.warning("pausing (%s): %s", name, why)
        elif why:
            self.health.not_ready[name] = why
        elif was:
            del self.health.not_ready[name]
            log.info("resuming (%s cleared)", name)
        if name == "backpressure":
            self.metrics.backpressure.set(1 if why else 0)

    def shutdown(self) -> None:
        """Hand everything over (dead letters, a covering scrape, the commit), then leave."""
        self.rebalancer.leave(self.source.consumer, sorted(self.source.assignment))
        self.source.close()
        log.info("left the group")
