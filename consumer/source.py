"""The source stage: a Kafka consumer in a group, read in batches by count and time.

Rebalance callbacks are handed to a `RebalanceListener` (the worker), which commits what it may
before a partition is given up. Consumer lag comes from librdkafka's own statistics, so reading
it costs no extra broker round trip.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from consumer.commit import PartitionKey
from consumer.errors import ConsumeError

__all__ = ["KafkaSource", "RebalanceListener"]

log = logging.getLogger(__name__)


class RebalanceListener(Protocol):
    def on_assigned(self, consumer: Consumer, keys: list[PartitionKey]) -> None: ...
    def on_revoked(self, consumer: Consumer, keys: list[PartitionKey], lost: bool) -> None: ...


LagCallback = Callable[[dict[PartitionKey, int]], None]


class KafkaSource:
    """Owns the confluent-kafka Consumer: subscribe, read batches, pause and resume."""

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        listener: RebalanceListener,
        on_lag: LagCallback | None = None,
    ) -> None:
        self._topic = topic
        self._listener = listener
        self._on_lag = on_lag
        if on_lag is not None:
            config = {**config, "stats_cb": self._stats}
        config = {**config, "error_cb": self._error}
        self.consumer = Consumer(config)
        self.assignment: set[PartitionKey] = set()
        self._paused: set[PartitionKey] = set()

    def subscribe(self) -> None:
        self.consumer.subscribe(
            [self._topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    def read_batch(self, max_messages: int, max_wait_s: float) -> list[Message]:
        """Up to `max_messages`, waiting at most `max_wait_s` for the batch to fill."""
        deadline = time.monotonic() + max_wait_s
        batch: list[Message] = []
        while len(batch) < max_messages:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and batch:
                break
            for message in self.consumer.consume(
                max_messages - len(batch), timeout=max(remaining, 0)
            ):
                err = message.error()
                if err is None:
                    batch.append(message)
                elif err.fatal():
                    raise ConsumeError(
                        f"fatal consumer error: {err.str()}",
                        topic=message.topic(),
                        partition=message.partition(),
                        offset=message.offset(),
                    )
                else:
                    # Transient: librdkafka retries by itself. Log and keep the batch going.
                    log.warning("consumer error: %s", err.str())
            if remaining <= 0:
                break
        return batch

    def pause(self, keys: set[PartitionKey]) -> None:
        new = keys - self._paused
        if new:
            self.consumer.pause([TopicPartition(t, p) for t, p in new])
            self._paused |= new
            log.warning("paused %s", sorted(new))

    def resume(self, keys: set[PartitionKey]) -> None:
        back = keys & self._paused
        if back:
            self.consumer.resume([TopicPartition(t, p) for t, p in back])
            self._paused -= back
            log.info("resumed %s", sorted(back))

    @property
    def paused(self) -> set[PartitionKey]:
        return set(self._paused)

    def close(self) -> None:
        """Leave the group (this triggers the revocation callback one last time)."""
        self.consumer.close()

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.assignment.update(keys)
        log.info("assigned %s", sorted(keys))
        self._listener.on_assigned(self.consumer, keys)

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._release(partitions, lost=False)

    def _lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._release(partitions, lost=True)

    def _release(self, partitions: list[TopicPartition], *, lost: bool) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        log.info("%s %s", "lost" if lost else "revoked", sorted(keys))
        self._listener.on_revoked(self.consumer, keys, lost)
        self.assignment.difference_update(keys)
        self._paused.difference_update(keys)

    def _stats(self, stats_json: str) -> None:
        if self._on_lag is None:
            return
        stats = json.loads(stats_json)
        lag: dict[PartitionKey, int] = {}
        for name, topic in stats.get("topics", {}).items():
            for pid, part in topic.get("partitions", {}).items():
                key = (name, int(pid))
                if key in self.assignment and part.get("consumer_lag", -1) >= 0:
                    lag[key] = int(part["consumer_lag"])
        self._on_lag(lag)

    @staticmethod
    def _error(err: KafkaError) -> None:
        if err.fatal():
            log.error("fatal Kafka error: %s", err.str())
        else:
            log.warning("Kafka error: %s", err.str())
