"""Direct updates of the OpenTelemetry SDK's aggregation objects (a private surface).

The SDK offers no public way to add pre-aggregated data (no batch `record`, no MetricProducer in
Python), and a public `add`/`record` costs 15-25 µs. `TokenTracker.record_batch` therefore makes
the *first* measurement of every (instrument, attribute set) through the public API, which creates
the series exactly as per-event recording would (cardinality slot or overflow included), then
finds the aggregation object that measurement landed in and adds later values to it directly, under
its own lock, the way the SDK's `aggregate()` would.

Everything private lives here, and is used only when it was verified: the SDK version is in
`VERIFIED_SDK_VERSIONS`, exemplars are off (a direct update records no exemplar), and every view
match aggregates into a plain cumulative sum or explicit-bucket histogram without attribute
filtering. Otherwise `resolve` returns None and the tracker stays on the public API. The
equivalence tests (tests/test_tracker.py) compare this path with per-event `record_usage`, data
point by data point and on the exposition text, so an SDK upgrade cannot change numbers silently:
add a version here only once they pass on it. The project's other private surfaces, with their
pins and tests, are listed in the README ("Private surfaces").

Idle-series expiry (consumer.usage.expiry) reads and prunes the same tables: `series` lists every
(table, key, aggregation) of a MeterProvider, `progress` is how much an aggregation has counted
so far, and `discard` takes one out of its table, under the table's lock as the SDK's `collect`
iterates it. The SDK then behaves as if the set had never been seen: the next measurement creates
a fresh series (starting from zero) if the cardinality limit leaves room.
"""

from __future__ import annotations

import importlib.metadata
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from opentelemetry.metrics import Counter, Histogram

__all__ = [
    "VERIFIED_SDK_VERSIONS",
    "Aggregations",
    "Table",
    "add_to_sums",
    "discard",
    "forget",
    "is_overflow",
    "merge_into_histograms",
    "metric_of",
    "progress",
    "record_into_histograms",
    "resolve",
    "resolve_series",
    "series",
    "verified",
]

VERIFIED_SDK_VERSIONS = frozenset({"1.45.2"})

try:
    from opentelemetry.sdk.metrics._internal._view_instrument_match import (
        _OVERFLOW_KEY,
        _hash_attributes,
    )
    from opentelemetry.sdk.metrics._internal.aggregation import (
        _ExplicitBucketHistogramAggregation,
        _SumAggregation,
    )
    from opentelemetry.sdk.metrics._internal.exemplar import AlwaysOffExemplarFilter

    _SDK_VERIFIED = importlib.metadata.version("opentelemetry-sdk") in VERIFIED_SDK_VERSIONS
except (ImportError, importlib.metadata.PackageNotFoundError):  # pragma: no cover - other SDKs
    _SDK_VERIFIED = False

# The aggregation objects one measurement of an attribute set updates (one per reader and view).
Aggregations = tuple[Any, ...]
# One (reader, view, instrument) table of aggregations by hashed attributes: a _ViewInstrumentMatch.
Table = Any


def verified() -> bool:
    """Whether the installed SDK is one these private uses were verified on."""
    return _SDK_VERIFIED


def usable(instrument: Counter | Histogram) -> bool:
    """Whether direct updates are verified for this instrument's SDK and configuration."""
    if not _SDK_VERIFIED:
        return False
    consumer = getattr(instrument, "_measurement_consumer", None)
    config = getattr(consumer, "_sdk_config", None)
    return isinstance(getattr(config, "exemplar_filter", None), AlwaysOffExemplarFilter)


def resolve(instrument: Counter | Histogram, attributes: Mapping[str, Any]) -> Aggregations | None:
    """The aggregations a public measurement with `attributes` just updated, or None."""
    found = resolve_series(instrument, attributes)
    return None if found is None else found[0]


def resolve_series(
    instrument: Counter | Histogram, attributes: Mapping[str, Any]
) -> tuple[Aggregations, bool] | None:
    """`resolve`, and whether any of the aggregations is an overflow series (shared by every
    set that got no slot, so its values must be applied in event order across sets)."""
    kind = (
        _SumAggregation if isinstance(instrument, Counter) else _ExplicitBucketHistogramAggregation
    )
    key = _hash_attributes(dict(attributes))
    found = []
    shared = False
    storages = instrument._measurement_consumer._reader_storages.values()  # type: ignore[union-attr]
    for storage in storages:
        for match in storage._get_or_init_view_instrument_match(instrument):
            if match._reset_on_collect or match._view._attribute_keys is not None:
                return None  # delta readers swap aggregations out; filtered views hash otherwise
            table = match._attributes_aggregation
            aggregation = table.get(key)
            if aggregation is None:
                aggregation = table.get(_OVERFLOW_KEY)  # the set did not get a slot
                shared = True
            if type(aggregation) is not kind:
                return None
            found.append(aggregation)
    return (tuple(found), shared) if found else None


def add_to_sums(aggregations: Aggregations, amount: int) -> None:
    """What `counter.add(amount)` does to each aggregation (exemplars are off)."""
    for aggregation in aggregations:
        with aggregation._lock:
            value = aggregation._value
            aggregation._value = amount if value is None else value + amount


def forget(slots: list[Aggregations | None], stale: AbstractSet[object]) -> list[int]:
    """Clear the slots (a tracker's resolved aggregations of one attribute set) that hold any of
    `stale`, so their next use goes through the public API again; returns the slots cleared."""
    cleared = [
        slot
        for slot, aggregations in enumerate(slots)
        if aggregations is not None and not stale.isdisjoint(aggregations)
    ]
    for slot in cleared:
        slots[slot] = None
    return cleared


def merge_into_histograms(aggregations: Aggregations, values: Sequence[float]) -> None:
    """What `histogram.record(v)` for each of `values`, in order, does to each aggregation."""
    for aggregation in aggregations:
        bounds = aggregation._boundaries
        with aggregation._lock:
            counts = aggregation._value
            if counts is None:
                counts = aggregation._value = aggregation._get_empty_bucket_counts()
            total = aggregation._sum
            for value in values:  # one by one, so a float sum rounds exactly as per event
                total += value
                counts[bisect_left(bounds, value)] += 1
            aggregation._sum = total
            if aggregation._record_min_max:
                aggregation._min = min(aggregation._min, *values)
                aggregation._max = max(aggregation._max, *values)


def record_into_histograms(aggregations: Aggregations, value: float) -> None:
    """What `histogram.record(value)` does to each aggregation (exemplars are off), at a
    fraction of the cost: no attribute cleaning and hashing, no measurement object."""
    for aggregation in aggregations:
        with aggregation._lock:
            counts = aggregation._value
            if counts is None:
                counts = aggregation._value = aggregation._get_empty_bucket_counts()
            aggregation._sum += value
            if aggregation._record_min_max:  # min() and max(), without the calls (~0.3 µs)
                if value < aggregation._min:  # noqa: PLR1730
                    aggregation._min = value
                if value > aggregation._max:  # noqa: PLR1730
                    aggregation._max = value
            counts[bisect_left(aggregation._boundaries, value)] += 1


def series(provider: Any) -> Iterator[tuple[Table, Any, Any]]:
    """(table, key, aggregation) for every series `provider` holds, the overflow series
    included. Only cumulative tables: a delta reader swaps its aggregations out itself."""
    for storage in provider._measurement_consumer._reader_storages.values():
        with storage._lock:
            tables = [m for ms in storage._instrument_view_instrument_matches.values() for m in ms]
        for table in tables:
            if table._reset_on_collect:
                continue
            with table._lock:  # a snapshot: the worker's thread may add series meanwhile
                items = list(table._attributes_aggregation.items())
            for key, aggregation in items:
                yield table, key, aggregation


def metric_of(table: Table) -> tuple[str, str, bool]:
    """The metric a table feeds: (name, unit, whether it is a counter)."""
    return table._name, table._instrument.unit or "", isinstance(table._instrument, Counter)


def progress(aggregation: Any) -> float:
    """What `aggregation` has counted since it was created: a sum's total, a histogram's count.

    It grows with every measurement a histogram takes and every non-zero add to a sum, whether or
    not a collect happened in between (a cumulative collect moves `_value` into `_previous_value`).
    """
    with aggregation._lock:
        value, previous = aggregation._value, aggregation._previous_value
        if isinstance(aggregation, _SumAggregation):
            return float((value or 0) + previous)
        return float(sum(value or ()) + sum(previous or ()))


def is_overflow(key: Any) -> bool:
    return bool(key == _OVERFLOW_KEY)


def discard(table: Table, key: Any, aggregation: Any) -> bool:
    """Take `aggregation` out of `table` (if still there under `key`); the series is gone from
    the next collect, and its slot counts no more against the cardinality limit."""
    with table._lock:
        if table._attributes_aggregation.get(key) is not aggregation:
            return False
        del table._attributes_aggregation[key]
        return True
