"""The offset ledger: which offsets may be committed, per partition and commit mode.

Per partition the ledger knows how far processing got and which offsets are still *held* (dead
letters the broker has not acknowledged). The *done* position is the lowest offset not yet
recorded or acknowledged; it never passes a held offset, so commits stay contiguous.

What may be committed depends on the commit mode:

- ``scrape`` (default): only what a completed /metrics response covered. At the start of a scrape
  the ledger snapshots every partition's processed position (`snapshot`); once the response has
  been written completely, that snapshot becomes the partition's *covered* position (`cover`).
  An event recorded into the meters is committable once covered; a dead-lettered one once
  acknowledged.
  So after a crash, whatever a scraper never saw is replayed, and whatever it saw is not.
- ``record``: everything done is committable. A crash between a commit and the next scrape loses
  the increments since that scrape; for users who accept that window.

Recorded-but-unscraped events are counted per partition, with their age, so the worker can pause
when replay after a crash would grow past its bounds. The ledger is shared with the HTTP thread
(scrapes) and is locked accordingly; `wait_covered` lets a revocation wait for a scrape.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from confluent_kafka import TopicPartition
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consumer.kafka.source import PartitionKey

__all__ = [
    "CommitMode",
    "LedgerCollector",
    "OffsetLedger",
    "PartitionState",
    "ScrapeSnapshot",
]

CommitMode = Literal["scrape", "record"]


@dataclass
class _Progress:
    processed_to: int = -1  # next offset after the highest one processed
    held: set[int] = field(default_factory=set)
    last_recorded: int = -1  # highest offset recorded into the meters
    covered: int = -1  # processed position at the start of the last completed scrape
    committed: int = -1
    # (processed position after a batch, events it recorded, when): recorded, not yet covered
    unscraped: deque[tuple[int, int, float]] = field(default_factory=deque)
    unscraped_count: int = 0

    def done(self) -> int:
        return min(self.held) if self.held else self.processed_to

    def fully_covered(self) -> bool:
        """Every event recorded on this partition was part of a completed scrape."""
        return self.last_recorded < 0 or self.last_recorded < self.covered

    def committable(self, mode: CommitMode) -> int:
        done = self.done()
        if mode == "record" or self.fully_covered():
            # Whatever is done past the covered position was dead-lettered, not recorded.
            return done
        return min(self.covered, done)


@dataclass(frozen=True)
class PartitionState:
    """One partition as operators see it (offsets are 'next offset', -1 when unknown)."""

    processed: int
    recorded: int
    covered: int
    committable: int
    committed: int
    held: int
    unscraped_events: int
    oldest_unscraped_s: float


@dataclass(frozen=True)
class ScrapeSnapshot:
    taken_at: float
    positions: dict[PartitionKey, tuple[_Progress, int]]


class OffsetLedger:
    """Per partition: processed, held, recorded, scrape-covered and committed positions."""

    def __init__(self, mode: CommitMode = "scrape") -> None:
        self.mode: CommitMode = mode
        self._partitions: dict[PartitionKey, _Progress] = {}
        self._lock = threading.Lock()
        self._covered = threading.Condition(self._lock)
        self._covered_at = float("-inf")
        #: Set by every cover: offsets may have become committable (the worker commits at once).
        self.covered_signal = threading.Event()

    # --- ownership ------------------------------------------------------------------------

    def assign(self, keys: Iterable[PartitionKey]) -> None:
        with self._lock:
            for key in keys:
                self._partitions.setdefault(key, _Progress())

    def revoke(self, keys: Iterable[PartitionKey]) -> None:
        with self._lock:
            for key in keys:
                self._partitions.pop(key, None)

    # --- the worker loop ------------------------------------------------------------------

    def advance(
        self, key: PartitionKey, next_offset: int, recorded: int = 0, last_recorded: int = -1
    ) -> None:
        """Everything before `next_offset` is processed; `recorded` events of it went into the
        meters (the highest at `last_recorded`). Call only after recording them."""
        with self._lock:
            progress = self._partitions.get(key)
            if progress is None or next_offset <= progress.processed_to:
                return
            progress.processed_to = next_offset
            if recorded:
                progress.last_recorded = max(progress.last_recorded, last_recorded)
                progress.unscraped.append((next_offset, recorded, time.monotonic()))
                progress.unscraped_count += recorded

    def hold(self, key: PartitionKey, offset: int) -> None:
        with self._lock:
            progress = self._partitions.get(key)
            if progress is not None:
                progress.held.add(offset)

    def release(self, key: PartitionKey, offset: int) -> None:
        with self._lock:
            progress = self._partitions.get(key)
            if progress is not None:
                progress.held.discard(offset)

    def is_held(self, key: PartitionKey) -> bool:
        with self._lock:
            progress = self._partitions.get(key)
            return progress is not None and bool(progress.held)

    def unscraped(self) -> tuple[int, float]:
        """Recorded events no scrape has covered yet, and the age in seconds of the oldest."""
        now = time.monotonic()
        with self._lock:
            count = sum(p.unscraped_count for p in self._partitions.values())
            oldest = min(
                (p.unscraped[0][2] for p in self._partitions.values() if p.unscraped),
                default=now,
            )
        return count, now - oldest

    # --- scrapes (HTTP thread) ------------------------------------------------------------

    def snapshot(self) -> ScrapeSnapshot:
        """Processed positions before a scrape collects: every event recorded before them is in
        its response (events are recorded before the ledger advances)."""
        with self._lock:
            positions = {key: (p, p.processed_to) for key, p in self._partitions.items()}
        return ScrapeSnapshot(time.monotonic(), positions)

    def cover(self, snapshot: ScrapeSnapshot) -> None:
        """The scrape that took `snapshot` was written completely to a scraper."""
        with self._lock:
            self._covered_at = max(self._covered_at, snapshot.taken_at)
            for key, (progress, position) in snapshot.positions.items():
                # A partition revoked (and maybe re-assigned) meanwhile has a new _Progress.
                if self._partitions.get(key) is not progress or position <= progress.covered:
                    continue
                progress.covered = position
                while progress.unscraped and progress.unscraped[0][0] <= position:
                    progress.unscraped_count -= progress.unscraped.popleft()[1]
            self._covered.notify_all()
        self.covered_signal.set()

    def covered_at(self) -> float:
        """When (time.monotonic) the newest completed scrape took its snapshot; -inf before
        the first. Whatever was recorded before then is in a response a scraper has."""
        with self._lock:
            return self._covered_at

    def wait_covered(self, keys: Iterable[PartitionKey], timeout: float) -> bool:
        """Block until a scrape covered everything recorded on `keys`, or `timeout` passes."""
        wanted = list(keys)

        def covered() -> bool:
            return all(
                (p := self._partitions.get(key)) is None or p.fully_covered() for key in wanted
            )

        with self._covered:
            return self._covered.wait_for(covered, timeout)

    # --- commits --------------------------------------------------------------------------

    def pending(self, keys: Iterable[PartitionKey] | None = None) -> list[TopicPartition]:
        """Committable positions that moved since the last commit."""
        with self._lock:
            wanted = list(self._partitions) if keys is None else list(keys)
            out = []
            for key in wanted:
                progress = self._partitions.get(key)
                if progress is None:
                    continue
                position = progress.committable(self.mode)
                if position > progress.committed:
                    out.append(TopicPartition(key[0], key[1], position))
            return out

    def mark_committed(self, offsets: Iterable[TopicPartition]) -> None:
        with self._lock:
            for tp in offsets:
                progress = self._partitions.get((tp.topic, tp.partition))
                if progress is not None and tp.offset > progress.committed:
                    progress.committed = tp.offset

    def states(self) -> Mapping[PartitionKey, PartitionState]:
        now = time.monotonic()
        with self._lock:
            return {
                key: PartitionState(
                    processed=p.processed_to,
                    recorded=p.last_recorded + 1 if p.last_recorded >= 0 else -1,
                    covered=p.covered,
                    committable=p.committable(self.mode),
                    committed=p.committed,
                    held=len(p.held),
                    unscraped_events=p.unscraped_count,
                    oldest_unscraped_s=now - p.unscraped[0][2] if p.unscraped else 0.0,
                )
                for key, p in self._partitions.items()
            }


class LedgerCollector(Collector):
    """Per-partition positions for operators, read from the ledger at scrape time."""

    _PARTITION_GAUGES = (
        ("processed_offset", "Next offset after the last processed message.", "processed"),
        (
            "recorded_offset",
            "Next offset after the last event recorded into the meters.",
            "recorded",
        ),
        (
            "scraped_offset",
            "Processed position covered by the last completed scrape.",
            "covered",
        ),
        ("committable_offset", "Position the commit mode allows to commit.", "committable"),
        ("committed_offset", "Last offset committed (the next offset to read).", "committed"),
        ("held_dead_letters", "Dead letters waiting for the broker's acknowledgement.", "held"),
        (
            "unscraped_events",
            "Recorded events no completed scrape has covered.",
            "unscraped_events",
        ),
        (
            "oldest_unscraped_age_seconds",
            "Age of the oldest recorded event no completed scrape has covered.",
            "oldest_unscraped_s",
        ),
    )

    def __init__(self, ledger: OffsetLedger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[Metric]:
        states = self._ledger.states()
        unscraped = GaugeMetricFamily(
            "usage_consumer_unscraped_events",
            "Recorded events no completed scrape has covered yet (replayed after a crash).",
            value=sum(s.unscraped_events for s in states.values()),
        )
        oldest = GaugeMetricFamily(
            "usage_consumer_oldest_unscraped_age_seconds",
            "Age of the oldest recorded event no completed scrape has covered yet.",
            value=max((s.oldest_unscraped_s for s in states.values()), default=0.0),
        )
        yield unscraped
        yield oldest
        for name, help_text, attr in self._PARTITION_GAUGES:
            family = GaugeMetricFamily(
                "usage_consumer_partition_" + name, help_text, labels=["topic", "partition"]
            )
            for (topic, partition), state in sorted(states.items()):
                family.add_metric([topic, str(partition)], float(getattr(state, attr)))
            yield family
