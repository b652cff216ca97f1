"""Key spread: the worker tells whether producers key events by attribute set."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from consumer.devtools.produce import synthetic_events
from consumer.keys.attributes import attribute_key
from consumer.pipeline.spread import KeySpread, SpreadCollector
from consumer.pipeline.validate import decode_fast
from consumer.usage.options import UsageOptions
from tests.harness import dump

PARTITIONS = 12


def _observe(spread: KeySpread, keyed_by_attributes: bool) -> None:
    events = list(synthetic_events(3000, seed=5))
    decoded = [decode_fast(dump(e), 65_536) for e in events]
    if keyed_by_attributes:  # a stand-in for the partitioner: any function of the key will do
        partitions = [int(attribute_key(e), 16) % PARTITIONS for e in events]
    else:
        partitions = [n % PARTITIONS for n in range(len(events))]  # keyed by event id
    for start in range(0, len(events), 500):
        spread.observe(decoded[start : start + 500], partitions[start : start + 500])  # type: ignore[arg-type]


def test_attribute_keys_keep_every_set_on_one_partition() -> None:
    spread = KeySpread(limit=10_000, every=1)
    _observe(spread, keyed_by_attributes=True)
    assert spread.sets > 300
    assert spread.on_several_partitions == 0


def test_event_id_keys_show() -> None:
    spread = KeySpread(limit=10_000, every=1)
    _observe(spread, keyed_by_attributes=False)
    several = spread.on_several_partitions
    assert several > spread.sets // 10, (several, spread.sets)
    registry = CollectorRegistry()
    registry.register(SpreadCollector(spread))
    assert registry.get_sample_value("usage_consumer_attribute_sets") == spread.sets
    assert (
        registry.get_sample_value("usage_consumer_attribute_sets_on_several_partitions") == several
    )


def test_one_batch_in_every_is_looked_at_and_the_sets_are_bounded() -> None:
    spread = KeySpread(limit=2, every=3)
    a, b, c = UsageOptions(provider="a"), UsageOptions(provider="b"), UsageOptions(provider="c")
    spread.observe([a, b, c], [0, 0, 0])  # batch 1: looked at; c is past the limit
    spread.observe([a, b], [1, 1])  # batches 2 and 3: skipped
    spread.observe([a, b], [1, 1])
    assert (spread.sets, spread.on_several_partitions) == (2, 0)
    spread.observe([a, c], [1, 1])  # batch 4: looked at; a moved, c is still not tracked
    assert (spread.sets, spread.on_several_partitions) == (2, 1)
