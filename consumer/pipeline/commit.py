"""The commit stage: commit what the ledger allows, and cover what a scrape has sent.

`Committer` commits the ledger's committable positions (consumer.pipeline.ledger says which)
synchronously, with explicit offsets. `ScrapeAcknowledger` is the /metrics server's observer: it
snapshots the ledger before a collect and covers that snapshot once the response is written.

The snapshot and the SDK's collect happen under the *record gate*, the lock the worker holds while
it records a batch and advances the ledger for it. So a response contains exactly the events
before its snapshot's positions: none recorded after the snapshot slips into the collect (scraped
but not covered, so replayed and counted twice after a crash). Only the collect is held under
the gate; rendering and sending the text happen after the worker may record again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from contextlib import AbstractContextManager

from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumer.errors import CommitError
from consumer.exposition.reader import UsageReader
from consumer.exposition.self_metrics import WorkerMetrics
from consumer.kafka.source import PartitionKey
from consumer.pipeline.ledger import OffsetLedger, ScrapeSnapshot

__all__ = ["Committer", "ScrapeAcknowledger"]

log = logging.getLogger(__name__)


class ScrapeAcknowledger:
    """The /metrics server's observer: snapshot before collecting, cover after sending."""

    def __init__(
        self,
        ledger: OffsetLedger,
        metrics: WorkerMetrics,
        *,
        gate: AbstractContextManager[object] | None = None,
        reader: UsageReader | None = None,
    ) -> None:
        self._ledger = ledger
        self._metrics = metrics
        self._gate = gate if gate is not None else threading.Lock()
        self._reader = reader

    def before_collect(self) -> object:
        with self._gate:
            snapshot = self._ledger.snapshot()
            if self._reader is not None:
                self._reader.prepare()
        return snapshot

    def after_response(self, token: object) -> None:
        assert isinstance(token, ScrapeSnapshot)
        self._ledger.cover(token)
        self._metrics.scrapes.inc()


class Committer:
    """Commits the ledger's committable positions synchronously, with explicit offsets."""

    def __init__(self, ledger: OffsetLedger, metrics: WorkerMetrics) -> None:
        self._ledger = ledger
        self._metrics = metrics

    def commit(self, consumer: Consumer, keys: Iterable[PartitionKey] | None = None) -> int:
        """Commit what moved; returns how many partitions were committed. Raises CommitError."""
        offsets = self._ledger.pending(keys)
        if not offsets:
            return 0
        try:
            results = consumer.commit(offsets=offsets, asynchronous=False) or []
        except KafkaException as exc:
            self._metrics.commit_failures.inc()
            raise _commit_error(exc.args[0], offsets[0]) from exc
        failed = next((tp for tp in results if tp.error is not None), None)
        if failed is not None:
            self._metrics.commit_failures.inc()
            raise _commit_error(failed.error, failed)
        self._ledger.mark_committed(offsets)
        self._metrics.commits.inc()
        log.debug("committed %s", [(tp.topic, tp.partition, tp.offset) for tp in offsets])
        return len(offsets)


def _commit_error(error: object, where: TopicPartition) -> CommitError:
    return CommitError(
        f"commit failed: {error}", topic=where.topic, partition=where.partition, offset=where.offset
    )
