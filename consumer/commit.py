"""The commit stage: which offsets may be committed, and committing them.

A partition's committable position is the lowest offset not yet *done*. An event is done when it
was recorded into the meters, or when the dead-letter topic acknowledged it. Offsets waiting for
a dead-letter acknowledgement are *held*: the position never passes a held offset, however far
the partition has been processed behind it, so commits stay contiguous.

`record` (this stage's only mode so far) commits what was recorded. Moving the commit point to
"after a scrape" changes only which position `advance` is fed with.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumer.errors import CommitError
from consumer.metrics import WorkerMetrics

__all__ = ["Committer", "OffsetLedger", "PartitionKey"]

log = logging.getLogger(__name__)

PartitionKey = tuple[str, int]


@dataclass
class _Progress:
    processed_to: int = -1  # next offset after the highest one processed; -1: none yet
    held: set[int] = field(default_factory=set)
    committed: int = -1

    def position(self) -> int:
        if self.held:
            return min(self.held)
        return self.processed_to


class OffsetLedger:
    """Per partition: how far it is processed, what is held, what was committed."""

    def __init__(self) -> None:
        self._partitions: dict[PartitionKey, _Progress] = {}

    def assign(self, keys: Iterable[PartitionKey]) -> None:
        for key in keys:
            self._partitions.setdefault(key, _Progress())

    def revoke(self, keys: Iterable[PartitionKey]) -> None:
        for key in keys:
            self._partitions.pop(key, None)

    def advance(self, key: PartitionKey, next_offset: int) -> None:
        """Everything before `next_offset` on this partition is done, except held offsets."""
        progress = self._partitions.get(key)
        if progress is not None and next_offset > progress.processed_to:
            progress.processed_to = next_offset

    def hold(self, key: PartitionKey, offset: int) -> None:
        progress = self._partitions.get(key)
        if progress is not None:
            progress.held.add(offset)

    def release(self, key: PartitionKey, offset: int) -> None:
        progress = self._partitions.get(key)
        if progress is not None:
            progress.held.discard(offset)

    def is_held(self, key: PartitionKey) -> bool:
        progress = self._partitions.get(key)
        return progress is not None and bool(progress.held)

    def pending(self, keys: Iterable[PartitionKey] | None = None) -> list[TopicPartition]:
        """Positions that moved since the last commit."""
        wanted = self._partitions.keys() if keys is None else keys
        out = []
        for key in wanted:
            progress = self._partitions.get(key)
            if progress is None:
                continue
            position = progress.position()
            if position > progress.committed:
                out.append(TopicPartition(key[0], key[1], position))
        return out

    def mark_committed(self, offsets: Iterable[TopicPartition]) -> None:
        for tp in offsets:
            progress = self._partitions.get((tp.topic, tp.partition))
            if progress is not None and tp.offset > progress.committed:
                progress.committed = tp.offset

    def positions(self) -> dict[PartitionKey, tuple[int, int, int]]:
        """(processed_to, committable, committed) per partition, for status and tests."""
        return {
            key: (p.processed_to, p.position(), p.committed) for key, p in self._partitions.items()
        }


class Committer:
    """Commits the ledger's positions synchronously, with explicit offsets."""

    def __init__(self, ledger: OffsetLedger, metrics: WorkerMetrics) -> None:
        self._ledger = ledger
        self._metrics = metrics

    def commit(self, consumer: Consumer, keys: Iterable[PartitionKey] | None = None) -> int:
        """Commit what moved; returns how many partitions were committed. Raises CommitError."""
        offsets = self._ledger.pending(keys)
        if not offsets:
            return 0
        try:
            results = consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self._metrics.commit_failures.inc()
            first = offsets[0]
            raise CommitError(
                f"commit failed: {exc.args[0]}",
                topic=first.topic,
                partition=first.partition,
                offset=first.offset,
            ) from exc
        failed = [tp for tp in results or [] if tp.error is not None]
        if failed:
            self._metrics.commit_failures.inc()
            tp = failed[0]
            raise CommitError(
                f"commit failed: {tp.error}",
                topic=tp.topic,
                partition=tp.partition,
                offset=tp.offset,
            )
        self._ledger.mark_committed(offsets)
        self._metrics.commits.inc()
        for tp in offsets:
            self._metrics.committed_offset.labels(tp.topic, str(tp.partition)).set(tp.offset)
        log.debug("committed %s", [(tp.topic, tp.partition, tp.offset) for tp in offsets])
        return len(offsets)
