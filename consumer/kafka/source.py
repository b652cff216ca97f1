"""The source stage: a Kafka consumer in a group, read in batches by count and time.

Rebalance callbacks are handed to a `RebalanceListener` (the worker), which commits what it may
before a partition is given up. They run inside `consume()`, so a batch can hold messages fetched
before a revocation: the hand-over committed up to them, they belong to the next owner, and the
batch drops them (librdkafka's own version barrier catches most, but not all; it arrives
asynchronously). Consumer lag comes from librdkafka's own statistics, so reading it costs no
extra broker round trip.

A refusal by the cluster stops the worker: librdkafka reports a failed SASL authentication, a
failed TLS handshake or a missing ACL as a transient error and retries for ever, which would
leave a worker that looks alive and reads nothing. `read_batch` raises an `AccessError` naming
the user, the CA file or the ACL instead (see `consumer.kafka.refusals`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer.errors import AccessError, ConsumeError
from consumer.kafka.refusals import ClientIdentity, access_error

__all__ = ["WAKE_CHECK_S", "KafkaSource", "PartitionKey", "RebalanceListener"]

PartitionKey = tuple[str, int]
"""A partition, as (topic, partition): the key every stage keeps its per-partition state by."""

log = logging.getLogger(__name__)

#: How often a waiting `read_batch` looks at its wake-up event (a consume call each time).
WAKE_CHECK_S = 0.01


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
        self._identity = ClientIdentity.of(config, topic)
        self._refused: AccessError | None = None  # set by error_cb, raised by read_batch
        self.consumer = Consumer(config)
        self.assignment: set[PartitionKey] = set()
        self._paused: set[PartitionKey] = set()
        self._released: set[PartitionKey] = set()  # revoked or lost during the current read

    def subscribe(self) -> None:
        self.consumer.subscribe(
            [self._topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    def read_batch(
        self, max_messages: int, max_wait_s: float, wake: threading.Event | None = None
    ) -> list[Message]:
        """Up to `max_messages`, waiting at most `max_wait_s` for the batch to fill; or less, once
        `wake` is set (the worker has something to do at once: a scrape made offsets
        committable), checked every `WAKE_CHECK_S`."""
        deadline = time.monotonic() + max_wait_s
        batch: list[Message] = []
        self._released.clear()
        while len(batch) < max_messages:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and batch:
                break
            if wake is not None:
                if wake.is_set():
                    break
                remaining = min(remaining, WAKE_CHECK_S)
            for message in self.consumer.consume(
                max_messages - len(batch), timeout=max(remaining, 0)
            ):
                err = message.error()
                if err is None:
                    batch.append(message)
                    continue
                refused = access_error(err, self._identity, message.topic())
                if refused is not None:
                    raise refused
                if err.fatal():
                    raise ConsumeError(
                        f"fatal consumer error: {err.str()}",
                        topic=message.topic(),
                        partition=message.partition(),
                        offset=message.offset(),
                    )
                # Transient: librdkafka retries by itself. Log and keep the batch going.
                log.warning("consumer error: %s", err.str())
            if self._refused is not None:
                raise self._refused
            if remaining <= 0 and (wake is None or time.monotonic() >= deadline):
                break
        return self._drop_released(batch) if self._released else batch

    def _drop_released(self, batch: list[Message]) -> list[Message]:
        """Drop the messages of partitions given up while this batch filled.

        A partition that came back within the same read (a second rebalance) may hold messages
        of both fetches, old and new, which cannot be told apart: drop them all and rewind it to
        its committed offset, where the new assignment starts anyway."""
        kept: list[Message] = []
        dropped: dict[PartitionKey, int] = {}
        for message in batch:
            key = (message.topic(), message.partition())
            if key in self._released:
                offset = message.offset() or 0
                dropped[key] = min(offset, dropped.get(key, offset))
            else:
                kept.append(message)
        if dropped:
            log.info(
                "dropped %d messages of %s fetched before they were revoked (the next owner "
                "reads them)",
                len(batch) - len(kept),
                sorted(dropped),
            )
            back = {key: offset for key, offset in dropped.items() if key in self.assignment}
            if back:
                self._rewind(back)
        return kept

    def _rewind(self, lowest: dict[PartitionKey, int]) -> None:
        partitions = [TopicPartition(t, p) for t, p in lowest]
        try:
            committed = self.consumer.committed(partitions, timeout=10)
        except KafkaException as exc:
            log.warning("could not read committed offsets to rewind %s: %s", sorted(lowest), exc)
            committed = partitions
        for tp in committed:
            # Without a committed offset, re-read from the lowest dropped one: nothing skipped.
            offset = tp.offset if tp.offset >= 0 else lowest[(tp.topic, tp.partition)]
            try:
                self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            except KafkaException as exc:
                # Its new fetch has not started yet, so it starts from the committed offset.
                log.debug("no rewind of %s/%d needed: %s", tp.topic, tp.partition, exc)
        log.info("rewound %s to their committed offsets", sorted(lowest))

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
        if lost:
            log.warning("lost %s: the next owner replays what was not committed", sorted(keys))
        else:
            log.info("revoked %s", sorted(keys))
        self._listener.on_revoked(self.consumer, keys, lost)
        self.assignment.difference_update(keys)
        self._paused.difference_update(keys)
        self._released.update(keys)

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

    def _error(self, err: KafkaError) -> None:
        refused = access_error(err, self._identity)
        if refused is not None:
            # Raised by read_batch once consume() returns: an exception inside a librdkafka
            # callback would surface wrapped, and the first refusal is the one to report.
            if self._refused is None:
                self._refused = refused
            return
        if self._refused is not None:
            return  # the aftermath ("all brokers are down") adds nothing to the refusal
        if err.fatal():
            log.error("fatal Kafka error: %s", err.str())
        else:
            log.warning("Kafka error: %s", err.str())
