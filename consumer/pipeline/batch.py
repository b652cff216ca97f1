"""The batch stage: one batch of messages, split into valid events and rejections.

A batch remembers, per partition, the offset after its last message and which of its events are
valid, so the commit stage can advance every partition it touched once the batch is recorded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import Message

from consumer.kafka.source import PartitionKey
from consumer.pipeline.deadletter import DeadLetter
from consumer.pipeline.validate import Rejection, UnknownFields, decode_fast, unknown_fields
from consumer.usage.tracker import UsageLike
from schemas import UsageEventV1

__all__ = ["Batch", "PartitionSpan", "split"]


@dataclass
class PartitionSpan:
    """What one batch holds of one partition."""

    end: int  # offset after the batch's last message on this partition
    recorded: int = 0  # valid events
    last_recorded: int = -1  # offset of the last valid event


@dataclass
class Batch:
    events: list[UsageLike] = field(default_factory=list)
    event_partitions: list[int] = field(default_factory=list)  # the partition of each event
    rejected: list[DeadLetter] = field(default_factory=list)
    spans: dict[PartitionKey, PartitionSpan] = field(default_factory=dict)
    size: int = 0
    unknown_fields: Counter[str] = field(default_factory=Counter)  # ignored, by name


def split(
    messages: list[Message], max_message_bytes: int, unknown: UnknownFields = "ignore"
) -> Batch:
    """Validate every message; one bad message never stops the others."""
    batch = Batch(size=len(messages))
    spans = batch.spans
    for message in messages:
        # A consumed message without an error always has its position.
        key = (cast(str, message.topic()), cast(int, message.partition()))
        offset = cast(int, message.offset())
        span = spans.get(key)
        if span is None:
            span = spans[key] = PartitionSpan(end=offset + 1)
        else:
            span.end = offset + 1
        value = message.value()
        outcome = decode_fast(value, max_message_bytes, unknown)
        if isinstance(outcome, Rejection):
            batch.rejected.append(DeadLetter.of(message, outcome))
        else:
            if type(outcome) is UsageEventV1 and unknown == "ignore":
                # The model's path: the fast decoder refuses unknown fields, so an event with
                # one always comes this way (rarely: producers send known fields).
                batch.unknown_fields.update(unknown_fields(cast(bytes, value)))
            batch.events.append(outcome)
            batch.event_partitions.append(key[1])
            span.recorded += 1
            span.last_recorded = offset
    return batch
