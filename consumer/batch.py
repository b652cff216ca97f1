"""The batch stage: one batch of messages, split into valid events and rejections.

A batch remembers, per partition, the offset after its last message, so the commit stage can
advance every partition the batch touched once the batch is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import Message

from consumer.commit import PartitionKey
from consumer.deadletter import DeadLetter
from consumer.validate import Rejection, decode
from schemas import UsageEventV1

__all__ = ["Batch", "split"]


@dataclass
class Batch:
    events: list[UsageEventV1] = field(default_factory=list)
    rejected: list[DeadLetter] = field(default_factory=list)
    # partition -> offset after the last message of this batch on it
    ends: dict[PartitionKey, int] = field(default_factory=dict)
    size: int = 0


def split(messages: list[Message], max_message_bytes: int) -> Batch:
    """Validate every message; one bad message never stops the others."""
    batch = Batch(size=len(messages))
    ends = batch.ends
    for message in messages:
        outcome = decode(message.value(), max_message_bytes)
        if isinstance(outcome, Rejection):
            batch.rejected.append(DeadLetter.of(message, outcome))
        else:
            batch.events.append(outcome)
        # A consumed message without an error always has its position.
        key = (cast(str, message.topic()), cast(int, message.partition()))
        ends[key] = cast(int, message.offset()) + 1
    return batch
