"""Group membership: a rebalance listener that notes this worker's member id for the status page."""

from __future__ import annotations

import logging

from confluent_kafka import Consumer, KafkaException

from consumer.kafka.source import PartitionKey, RebalanceListener

__all__ = ["Membership"]

log = logging.getLogger(__name__)


class Membership:
    """A rebalance listener in front of the worker's: notes the group member id.

    Rebalance callbacks run in the worker's thread, inside consume(), so the Consumer is asked
    there and never from an HTTP thread (which could race its close() at shutdown). A member
    that rejoins under a new id is re-assigned, so the id stays current."""

    def __init__(self, listener: RebalanceListener) -> None:
        self._listener = listener
        self.member_id = ""

    def _note(self, consumer: Consumer) -> None:
        try:
            self.member_id = consumer.memberid() or ""
        except (RuntimeError, KafkaException) as exc:
            log.debug("no member id: %s", exc)

    def on_assigned(self, consumer: Consumer, keys: list[PartitionKey]) -> None:
        self._note(consumer)
        self._listener.on_assigned(consumer, keys)

    def on_revoked(self, consumer: Consumer, keys: list[PartitionKey], lost: bool) -> None:
        self._listener.on_revoked(consumer, keys, lost)
