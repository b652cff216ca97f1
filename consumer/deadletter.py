"""The dead-letter stage: invalid messages go to the DLQ topic, unchanged, with the reason.

Each dead letter keeps the original key, value, headers and timestamp, and adds headers:

    dlq.reason            reason code (consumer.validate.Reason)
    dlq.detail            short human-readable detail
    dlq.source.topic      where the message came from
    dlq.source.partition
    dlq.source.offset
    dlq.value.truncated   "true" only when the value had to be cut (see below)
    dlq.value.size        the original value's size in bytes, when cut

A value too large for the dead-letter topic (the producer or the broker refuses it with
MSG_SIZE_TOO_LARGE) is written again with its first `TRUNCATED_VALUE_BYTES` bytes, its original
headers dropped: losing the tail of a message already judged invalid beats stalling the
partition, and the source offset still points at the whole message.

Its source offset is *held* in the ledger until the broker acknowledges the dead letter, so the
partition's commit never passes a message that is neither recorded nor safely dead-lettered.
A failed delivery is retried (with backoff) until it succeeds or the partition is revoked.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import cast

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)

from consumer.commit import OffsetLedger, PartitionKey
from consumer.metrics import WorkerMetrics
from consumer.validate import Rejection

__all__ = ["DeadLetter", "DeadLetterSink"]

log = logging.getLogger(__name__)

_RETRY_BACKOFF_S = 1.0
TRUNCATED_VALUE_BYTES = 65_536


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]
    timestamp_ms: int
    rejection: Rejection
    original_size: int | None = None  # set when the value was cut to fit the DLQ

    @classmethod
    def of(cls, message: Message, rejection: Rejection) -> DeadLetter:
        ts_type, ts = message.timestamp()
        raw = message.headers() or []
        return cls(
            # A consumed message without an error always has its position.
            topic=cast(str, message.topic()),
            partition=cast(int, message.partition()),
            offset=cast(int, message.offset()),
            key=message.key(),
            value=message.value(),
            headers=list(raw.items()) if isinstance(raw, dict) else list(raw),
            # 0 lets the producer stamp "now" when the original had no timestamp.
            timestamp_ms=ts if ts_type != TIMESTAMP_NOT_AVAILABLE and ts > 0 else 0,
            rejection=rejection,
        )

    @property
    def source(self) -> PartitionKey:
        return (self.topic, self.partition)

    def dlq_headers(self) -> list[tuple[str, str | bytes | None]]:
        headers = [
            *self.headers,
            ("dlq.reason", self.rejection.reason.value.encode()),
            ("dlq.detail", self.rejection.detail.encode("utf-8", "backslashreplace")),
            ("dlq.source.topic", self.topic.encode()),
            ("dlq.source.partition", str(self.partition).encode()),
            ("dlq.source.offset", str(self.offset).encode()),
        ]
        if self.original_size is not None:
            headers += [
                ("dlq.value.truncated", b"true"),
                ("dlq.value.size", str(self.original_size).encode()),
            ]
        return headers

    def truncated(self) -> DeadLetter:
        """A copy small enough for any DLQ topic: value cut, original headers dropped."""
        value = self.value or b""
        return replace(
            self, value=value[:TRUNCATED_VALUE_BYTES], headers=[], original_size=len(value)
        )


class DeadLetterSink:
    """Writes dead letters and releases their offsets once the broker acknowledges them."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        ledger: OffsetLedger,
        metrics: WorkerMetrics,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._ledger = ledger
        self._metrics = metrics
        self._failed: list[DeadLetter] = []  # failed, waiting for the retry back-off
        # (partition, offset) of every letter that failed and is not delivered yet, retries in
        # flight included: their partitions stay paused until the broker takes them.
        self._unsettled: set[tuple[PartitionKey, int]] = set()
        self._retry_at = 0.0

    @property
    def topic(self) -> str:
        return self._topic

    def send(self, letter: DeadLetter) -> None:
        self._ledger.hold(letter.source, letter.offset)
        self._produce(letter)

    def _produce(self, letter: DeadLetter) -> None:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            self._delivered(letter, err)

        while True:
            try:
                self._producer.produce(
                    self._topic,
                    value=letter.value,
                    key=letter.key,
                    headers=letter.dlq_headers(),
                    on_delivery=on_delivery,
                    timestamp=letter.timestamp_ms,
                )
                return
            except BufferError:
                # Local queue full: serve delivery reports to make room, then try again.
                self._producer.poll(0.1)
            except KafkaException as exc:
                # Refused before it was queued (too large for the producer, say): the same
                # path as a failed delivery, never a crash.
                self._delivered(letter, exc.args[0])
                return

    def _delivered(self, letter: DeadLetter, err: KafkaError | None) -> None:
        if err is None:
            self._unsettled.discard((letter.source, letter.offset))
            self._ledger.release(letter.source, letter.offset)
            self._metrics.dead_lettered.labels(letter.rejection.reason.value).inc()
            return
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE and letter.original_size is None:
            log.warning(
                "dead letter for %s/%d@%d too large for %s (%d bytes): writing it truncated",
                letter.topic,
                letter.partition,
                letter.offset,
                self._topic,
                len(letter.value or b""),
            )
            self._produce(letter.truncated())
            return
        self._metrics.dead_letter_failures.inc()
        log.error(
            "dead-letter write to %s failed for %s/%d@%d (%s): %s; the partition will not "
            "advance until it succeeds",
            self._topic,
            letter.topic,
            letter.partition,
            letter.offset,
            letter.rejection.reason.value,
            err.str(),
        )
        self._failed.append(letter)
        self._unsettled.add((letter.source, letter.offset))
        self._retry_at = time.monotonic() + _RETRY_BACKOFF_S

    def service(self, timeout: float = 0.0) -> None:
        """Serve delivery reports and retry failed dead letters when their backoff is over."""
        self._producer.poll(timeout)
        if self._failed and time.monotonic() >= self._retry_at:
            retry, self._failed = self._failed, []
            for letter in retry:
                if self._ledger.is_held(letter.source):  # still ours
                    self._produce(letter)
                else:  # the partition left meanwhile: its next owner redoes the letter
                    self._unsettled.discard((letter.source, letter.offset))

    def flush(self, timeout: float) -> int:
        """Wait for outstanding acknowledgements; returns how many are still in flight."""
        return int(self._producer.flush(timeout))

    def close(self) -> None:
        """After the final commit: whatever is still queued was not committed past, so the
        partition's next owner redoes it; drop it rather than wait on a broker that is gone."""
        self._producer.purge(in_queue=True, in_flight=False)
        self._producer.flush(0)
        self._producer.close()

    def blocked(self) -> set[PartitionKey]:
        """Partitions with a dead letter that failed and is not delivered yet (waiting for its
        retry, or retried and in flight)."""
        return {source for source, _ in self._unsettled}

    def forget(self, keys: set[PartitionKey]) -> None:
        """A partition left: its failed letters are the next owner's to redo."""
        self._failed = [letter for letter in self._failed if letter.source not in keys]
        self._unsettled = {entry for entry in self._unsettled if entry[0] not in keys}
