"""KafkaSource's batches across rebalances, with a scripted consumer in place of librdkafka.

Rebalance callbacks run inside `consume()`; these tests replay the orderings that a real broker
produces only under load (tests/test_faults.py covers the same path end to end).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from consumer.kafka.source import KafkaSource, PartitionKey

TOPIC = "usage"


@dataclass
class FakeMessage:
    _partition: int
    _offset: int

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> None:
        return None


@dataclass
class Listener:
    events: list[tuple[str, list[PartitionKey], bool]] = field(default_factory=list)

    def on_assigned(self, consumer: Consumer, keys: list[PartitionKey]) -> None:
        self.events.append(("assigned", keys, False))

    def on_revoked(self, consumer: Consumer, keys: list[PartitionKey], lost: bool) -> None:
        self.events.append(("revoked", keys, lost))


Step = Callable[[KafkaSource], list[FakeMessage]]


class ScriptedConsumer:
    """Each consume() call runs the next step (callbacks first, then its messages)."""

    def __init__(self, source: KafkaSource, steps: list[Step], committed: dict[int, int]) -> None:
        self._source = source
        self._steps = list(steps)
        self._committed = committed
        self.seeks: list[tuple[int, int]] = []

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        if not self._steps:
            time.sleep(min(timeout, 0.01))
            return []
        return self._steps.pop(0)(self._source)[:num_messages]

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self._committed.get(tp.partition, -1001))
            for tp in partitions
        ]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))


def _source(steps: list[Step], committed: dict[int, int] | None = None) -> Any:
    listener = Listener()
    source = KafkaSource({"bootstrap.servers": "127.0.0.1:9", "group.id": "unit"}, TOPIC, listener)
    source.consumer.close()
    fake = ScriptedConsumer(source, steps, committed or {})
    source.consumer = fake  # type: ignore[assignment]
    source._assigned(fake, [TopicPartition(TOPIC, p) for p in (0, 1)])  # type: ignore[arg-type]
    return source, fake, listener


def _tps(*partitions: int) -> list[TopicPartition]:
    return [TopicPartition(TOPIC, p) for p in partitions]


def _offsets(batch: list[Any]) -> list[tuple[int, int]]:
    return [(m.partition(), m.offset()) for m in batch]


def test_a_read_without_rebalance_returns_everything() -> None:
    source, fake, _ = _source(
        [lambda s: [FakeMessage(0, 10), FakeMessage(1, 20)], lambda s: [FakeMessage(0, 11)]]
    )
    batch = source.read_batch(100, 0.05)
    assert _offsets(batch) == [(0, 10), (1, 20), (0, 11)]
    assert fake.seeks == []


def test_a_waiting_read_returns_soon_after_its_wake_event_with_what_it_has() -> None:
    source, _, _ = _source([lambda s: [FakeMessage(0, 10)]])
    wake = threading.Event()
    began = time.monotonic()
    threading.Timer(0.05, wake.set).start()
    batch = source.read_batch(100, 5.0, wake)
    took = time.monotonic() - began
    assert _offsets(batch) == [(0, 10)]
    assert 0.05 <= took < 1.0  # not the 5 s the batch could have waited
    # Set before the read: the read returns at once (the worker has a commit to make).
    assert source.read_batch(100, 5.0, wake) == []
    # Without one, a read waits out its time to fill the batch.
    began = time.monotonic()
    assert source.read_batch(100, 0.1) == []
    assert time.monotonic() - began >= 0.1


def _revoke(*partitions: int, lost: bool = False) -> Callable[[KafkaSource], None]:
    def run(source: KafkaSource) -> None:
        if lost:
            source._lost(source.consumer, _tps(*partitions))
        else:
            source._revoked(source.consumer, _tps(*partitions))

    return run


def test_messages_of_a_partition_revoked_while_the_batch_fills_are_dropped() -> None:
    def revoke_then_more(s: KafkaSource) -> list[FakeMessage]:
        _revoke(0)(s)
        # p0's 12 was fetched before the revocation; librdkafka's barrier missed it.
        return [FakeMessage(1, 21), FakeMessage(0, 12)]

    source, fake, listener = _source(
        [lambda s: [FakeMessage(0, 10), FakeMessage(0, 11), FakeMessage(1, 20)], revoke_then_more]
    )
    batch = source.read_batch(100, 0.05)
    # The hand-over committed p0 up to 10: 10, 11 and 12 belong to p0's next owner.
    assert _offsets(batch) == [(1, 20), (1, 21)]
    assert listener.events[-1] == ("revoked", [(TOPIC, 0)], False)
    assert fake.seeks == []
    # The next read starts clean: nothing is dropped any more.
    fake._steps.append(lambda s: [FakeMessage(1, 22)])
    assert _offsets(source.read_batch(100, 0.05)) == [(1, 22)]


def test_a_lost_partition_is_dropped_too() -> None:
    def lose(s: KafkaSource) -> list[FakeMessage]:
        _revoke(1, lost=True)(s)
        return []

    source, _, listener = _source([lambda s: [FakeMessage(1, 5), FakeMessage(0, 7)], lose])
    assert _offsets(source.read_batch(100, 0.05)) == [(0, 7)]
    assert listener.events[-1] == ("revoked", [(TOPIC, 1)], True)


def test_a_partition_back_within_the_same_read_is_rewound_to_its_committed_offset() -> None:
    def revoke_and_reassign(s: KafkaSource) -> list[FakeMessage]:
        _revoke(0)(s)
        s._assigned(s.consumer, _tps(0))
        # Old fetch (11) and new fetch (from the committed 30) cannot be told apart.
        return [FakeMessage(0, 11), FakeMessage(0, 30), FakeMessage(1, 20)]

    source, fake, _ = _source(
        [lambda s: [FakeMessage(0, 10)], revoke_and_reassign], committed={0: 30}
    )
    batch = source.read_batch(100, 0.05)
    assert _offsets(batch) == [(1, 20)]
    assert fake.seeks == [(0, 30)]  # read again from where the new assignment starts
    assert (TOPIC, 0) in source.assignment


def test_without_a_committed_offset_the_rewind_goes_to_the_lowest_dropped_one() -> None:
    def revoke_and_reassign(s: KafkaSource) -> list[FakeMessage]:
        _revoke(0)(s)
        s._assigned(s.consumer, _tps(0))
        return [FakeMessage(0, 4)]

    source, fake, _ = _source([lambda s: [FakeMessage(0, 3)], revoke_and_reassign])
    assert _offsets(source.read_batch(100, 0.05)) == []
    assert fake.seeks == [(0, 3)]
