"""Key spread: are the producers keying events by attribute set?

With attribute keys (consumer.keys.attributes) every event of one attribute set arrives on one
partition, so each worker of a group holds only its share of the series. An attribute set seen
on more than one partition says the producers key otherwise (by event id, or not at all), and
every worker will end up holding nearly every set. `KeySpread` notes, for the attribute sets it
has seen, the first partition each came from, and counts those that came from another one too.

It looks at one batch in `every` (the answer builds up over many batches; the worker's hot path
should not pay a dictionary lookup per event for it) and tracks at most `limit` sets.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from typing import Final

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consumer.keys.attributes import ATTRIBUTE_KEY_FIELDS
from consumer.usage.options import UsageLike

__all__ = ["KeySpread", "SpreadCollector"]

_ATTRIBUTES: Final = operator.attrgetter(*ATTRIBUTE_KEY_FIELDS)


class KeySpread:
    def __init__(self, limit: int, every: int = 8) -> None:
        self._limit = limit
        self._every = every
        self._batches = 0
        self._first: dict[object, int] = {}  # attribute values -> first partition seen
        self._several: set[object] = set()

    def observe(self, events: Sequence[UsageLike], partitions: Sequence[int]) -> None:
        """`partitions[i]` is the partition `events[i]` came from."""
        self._batches += 1
        if (self._batches - 1) % self._every:  # batches 1, 1 + every, 1 + 2 * every, ...
            return
        first = self._first
        for event, partition in zip(events, partitions, strict=True):
            values = _ATTRIBUTES(event)
            seen = first.get(values)
            if seen is None:
                if len(first) < self._limit:
                    first[values] = partition
            elif seen != partition:
                self._several.add(values)

    @property
    def sets(self) -> int:
        """Attribute sets tracked."""
        return len(self._first)

    @property
    def on_several_partitions(self) -> int:
        """Tracked attribute sets that arrived on more than one partition."""
        return len(self._several)


class SpreadCollector(Collector):
    """The key spread as two gauges, read at scrape time."""

    def __init__(self, spread: KeySpread) -> None:
        self._spread = spread

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "usage_consumer_attribute_sets",
            "Attribute sets this worker has seen (in the sampled batches), at most the "
            "cardinality limit.",
            value=self._spread.sets,
        )
        yield GaugeMetricFamily(
            "usage_consumer_attribute_sets_on_several_partitions",
            "Attribute sets seen on more than one partition: 0 when producers key events by "
            "attribute set, so that each worker holds only its share of the series.",
            value=self._spread.on_several_partitions,
        )
