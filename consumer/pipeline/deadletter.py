"""The dead-letter stage: invalid messages go to the DLQ topic, unchanged, with the reason.

Each dead letter keeps the original key, value, headers and timestamp, and adds headers:

    dlq.reason            reason code (consumer.pipeline.validate.Reason)
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

`RecentDeadLetters` keeps, per reason code, how many letters were rejected, acknowledged and
failed, and the last few of them (a short printable prefix of the value), for the status page:
an operator looking at a growing DLQ wants to see *what* is arriving without reading the topic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import cast

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)

from consumer.errors import ConsumeError
from consumer.exposition.self_metrics import WorkerMetrics
from consumer.kafka.refusals import ClientIdentity, access_error
from consumer.kafka.source import PartitionKey
from consumer.pipeline.ledger import OffsetLedger
from consumer.pipeline.validate import Rejection

__all__ = ["DeadLetter", "DeadLetterExample", "DeadLetterSink", "ReasonCounts", "RecentDeadLetters"]

log = logging.getLogger(__name__)

_RETRY_BACKOFF_S = 1.0
TRUNCATED_VALUE_BYTES = 65_536
EXAMPLES_PER_REASON = 5
EXAMPLE_VALUE_CHARS = 200


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


@dataclass(frozen=True, slots=True)
class DeadLetterExample:
    """One rejected message as the status page shows it: never more than a short prefix."""

    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    value_prefix: str  # the first EXAMPLE_VALUE_CHARS characters, non-printables escaped
    value_bytes: int  # the whole value's size; -1 for a null value
    at: float  # wall-clock time it was rejected (time.time())


@dataclass(frozen=True, slots=True)
class ReasonCounts:
    rejected: int
    acknowledged: int
    failed: int  # failed write attempts (each is retried)
    examples: tuple[DeadLetterExample, ...]  # oldest first, at most `per_reason`


class _Reason:
    __slots__ = ("acknowledged", "examples", "failed", "rejected")

    def __init__(self, per_reason: int) -> None:
        self.rejected = self.acknowledged = self.failed = 0
        self.examples: deque[DeadLetterExample] = deque(maxlen=per_reason)


def _printable(text: str) -> str:
    # Control and format characters (NUL, escape sequences, bidi overrides) would garble or
    # disguise what an operator reads; show them as escapes instead.
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class RecentDeadLetters:
    """Counts per reason code and the last few examples of each; bounded in size.

    Reason codes are a closed set (consumer.pipeline.validate.Reason) and each keeps at most
    `per_reason` examples of at most `value_chars` characters, so this never grows with the
    traffic. Written by the worker loop, read by HTTP threads: locked.
    """

    def __init__(
        self, per_reason: int = EXAMPLES_PER_REASON, value_chars: int = EXAMPLE_VALUE_CHARS
    ) -> None:
        self._per_reason = per_reason
        self._value_chars = value_chars
        self._reasons: dict[str, _Reason] = {}
        self._lock = threading.Lock()

    def _entry(self, reason: str) -> _Reason:
        entry = self._reasons.get(reason)
        if entry is None:
            entry = self._reasons[reason] = _Reason(self._per_reason)
        return entry

    def rejected(self, letter: DeadLetter, at: float | None = None) -> None:
        value = letter.value
        # Cut the bytes before decoding: a 10 MiB message must not cost 10 MiB of work here.
        raw = b"" if value is None else value[: self._value_chars * 4]
        example = DeadLetterExample(
            reason=letter.rejection.reason.value,
            detail=_printable(letter.rejection.detail[:300]),
            topic=letter.topic,
            partition=letter.partition,
            offset=letter.offset,
            value_prefix=_printable(raw.decode("utf-8", "replace")[: self._value_chars]),
            value_bytes=-1 if value is None else len(value),
            at=time.time() if at is None else at,
        )
        with self._lock:
            entry = self._entry(example.reason)
            entry.rejected += 1
            entry.examples.append(example)

    def acknowledged(self, letter: DeadLetter) -> None:
        with self._lock:
            self._entry(letter.rejection.reason.value).acknowledged += 1

    def failed(self, letter: DeadLetter) -> None:
        with self._lock:
            self._entry(letter.rejection.reason.value).failed += 1

    def snapshot(self) -> dict[str, ReasonCounts]:
        """Per reason code, sorted by code."""
        with self._lock:
            return {
                reason: ReasonCounts(e.rejected, e.acknowledged, e.failed, tuple(e.examples))
                for reason, e in sorted(self._reasons.items())
            }


class DeadLetterSink:
    """Writes dead letters and releases their offsets once the broker acknowledges them."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        ledger: OffsetLedger,
        metrics: WorkerMetrics,
        *,
        recent: RecentDeadLetters | None = None,
        identity: ClientIdentity | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._identity = identity or ClientIdentity(dlq_topic=topic)
        self._ledger = ledger
        self._metrics = metrics
        self.recent = recent if recent is not None else RecentDeadLetters()
        self._failed: list[DeadLetter] = []  # failed, waiting for the retry back-off
        # (partition, offset) of every letter that failed and is not delivered yet, retries in
        # flight included: their partitions stay paused until the broker takes them.
        self._unsettled: set[tuple[PartitionKey, int]] = set()
        self._retry_at = 0.0

    @property
    def topic(self) -> str:
        return self._topic

    def send(self, letter: DeadLetter) -> None:
        self.recent.rejected(letter)
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
            self.recent.acknowledged(letter)
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
        self.recent.failed(letter)
        if not self._ledger.is_held(letter.source):
            # Its partition left while the letter was in flight (lost, or a hand-over whose
            # flush timed out): the next owner redoes it; blocking it here would pause a
            # partition this worker no longer has.
            log.warning(
                "dead-letter write to %s failed for %s/%d@%d after the partition left: %s; "
                "its next owner writes it",
                self._topic,
                letter.topic,
                letter.partition,
                letter.offset,
                err.str(),
            )
            return
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
        try:
            self._producer.poll(timeout)
        except KafkaException as exc:
            # A fatal producer error (e.g. no producer id: the principal may write no topic)
            # is raised from poll(), not reported through a delivery callback.
            err = exc.args[0]
            raise access_error(err, self._identity) or ConsumeError(
                f"the dead-letter producer failed: {err.str()}"
            ) from None
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
