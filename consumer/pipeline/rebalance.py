"""Hand-over: what a worker does when partitions are assigned to it, revoked or lost.

A revoked partition is committed as far as earlier scrapes covered it, its in-flight dead letters
get a chance to be acknowledged, then it waits (bounded by `handover_timeout_s`) for a scrape that
covers everything recorded, and is committed again before it is released. A lost one is released
untouched: another member may own it already, so committing could go backwards. Each hand-over
ends in one outcome, counted: `covered`, `timeout`, `commit_failed` or `lost`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import Consumer

from consumer.errors import CommitError
from consumer.exposition.self_metrics import WorkerMetrics
from consumer.kafka.source import PartitionKey
from consumer.pipeline.commit import Committer
from consumer.pipeline.deadletter import DeadLetterSink
from consumer.pipeline.health import HealthState
from consumer.pipeline.ledger import OffsetLedger

__all__ = ["Rebalancer"]

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
