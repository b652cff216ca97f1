"""Pausing: which partitions must stop being read, and why; resuming them once the cause clears.

Two causes, each a readiness condition of its own (so `/readyz` says why):

- ``backpressure`` (scrape mode): too many recorded events, or too old a one, wait for a scrape,
  so a crash would replay more than the bounds allow. Every assigned partition pauses.
- ``dead_letter``: a dead letter of the partition failed and is not delivered yet. Only that
  partition pauses: reading on would pile up offsets its commit cannot pass.

`PauseManager.apply` runs once per loop step; it changes the consumer only when the wanted set
of (partition, reason) differs from the last one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from consumer.exposition.self_metrics import WorkerMetrics
from consumer.kafka.source import PartitionKey
from consumer.pipeline.health import HealthState
from consumer.pipeline.ledger import OffsetLedger

__all__ = ["Backpressure", "BlockedPartitions", "Pausable", "PauseManager"]

log = logging.getLogger(__name__)


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


class Pausable(Protocol):
    """The part of the source that pausing drives (consumer.kafka.source.KafkaSource)."""

    @property
    def assignment(self) -> set[PartitionKey]: ...
    @property
    def paused(self) -> set[PartitionKey]: ...
    def pause(self, keys: set[PartitionKey]) -> None: ...
    def resume(self, keys: set[PartitionKey]) -> None: ...


class BlockedPartitions(Protocol):
    """The part of the dead-letter stage that pausing asks (consumer.pipeline.deadletter)."""

    @property
    def topic(self) -> str: ...
    def blocked(self) -> set[PartitionKey]: ...


@dataclass
class PauseManager:
    backpressure: Backpressure
    ledger: OffsetLedger
    dead_letters: BlockedPartitions
    metrics: WorkerMetrics
    health: HealthState
    reasons: dict[PartitionKey, str] = field(default_factory=dict)
    """What is paused now, and why."""

    def wanted(self, assignment: set[PartitionKey]) -> dict[PartitionKey, str]:
        """What should be paused, and why; updates the readiness conditions as it goes."""
        wanted: dict[PartitionKey, str] = {}
        why = self.backpressure.exceeded(self.ledger)
        if why:
            wanted = dict.fromkeys(assignment, "backpressure")
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
        return wanted

    def apply(self, source: Pausable) -> None:
        """Pause what must wait (failing dead letters, too much unscraped); resume the rest."""
        wanted = self.wanted(source.assignment)
        # A partition revoked (or lost) and assigned again since the last step comes back
        # unpaused, its gauge dropped: forget it here, so it is paused and counted afresh.
        self.reasons = {key: why for key, why in self.reasons.items() if key in source.paused}
        if wanted == self.reasons:
            return
        for key, reason in self.reasons.items():
            # A revoked partition's gauges were dropped with it; do not bring them back.
            if wanted.get(key) != reason and key in source.assignment:
                self.metrics.partition_paused.labels(key[0], str(key[1]), reason).set(0)
        for key, reason in wanted.items():
            if self.reasons.get(key) != reason:
                self.metrics.partition_paused.labels(key[0], str(key[1]), reason).set(1)
        source.pause(set(wanted))
        source.resume(source.paused - set(wanted))
        self.reasons = wanted

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
