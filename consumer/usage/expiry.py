"""Idle-series expiry: usage series that stopped receiving events leave the exposition.

Without it, a worker that lost partitions in a rebalance exports the attribute sets it will never
see again for the rest of its life, and they keep their cardinality slots. With `series_idle_ttl`
set, the worker loop calls `SeriesExpiry.sweep` between batches, on the thread that records, and
a sweep removes every usage series that is

- idle: its count (a sum's total, a histogram's number of values) has not moved since the sweep
  that last saw it move, at least `ttl_s` ago. Sweeps run every `ttl_s / 10` (0.5 s to 60 s),
  so a series goes between `ttl_s` and `ttl_s` plus one interval after its last update. A sum
  that only ever gets 0 added does not move: nothing a scraper sees changes either;
- covered, in scrape commit mode: a completed scrape was taken after that sweep, so Prometheus
  has the series' last value. (Removed before that, the increments since the last scrape would
  vanish while the next scrape still let their offsets be committed.)

A removed series is gone from the next scrape (Prometheus marks it stale) and its slot no longer
counts against the cardinality limit. If its attribute set comes back, the series starts again
from zero, which `rate()` and `increase()` read as a counter reset, as after a restart (the reset
is seen when the first value after the gap is below the last one before it).

Trackers keep the aggregations they update directly; `Sweep.stale` lists those they must forget:
the removed ones, and the overflow series of every table that lost a series, since an attribute
set folded into it may now get a series of its own, as per-event recording would give it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from consumer.exposition.reader import type_line_name
from consumer.usage._otel_fastpath import (
    VERIFIED_SDK_VERSIONS,
    discard,
    is_overflow,
    metric_of,
    progress,
    series,
    verified,
)

__all__ = [
    "MAX_SWEEP_INTERVAL_S",
    "MIN_SWEEP_INTERVAL_S",
    "VERIFIED_SDK_VERSIONS",
    "SeriesExpiry",
    "Sweep",
    "supported",
]

MIN_SWEEP_INTERVAL_S: Final = 0.5
MAX_SWEEP_INTERVAL_S: Final = 60.0


def supported() -> bool:
    """Whether expiry is verified for the installed OpenTelemetry SDK (a private surface)."""
    return verified()


@dataclass(frozen=True)
class Sweep:
    expired: Mapping[str, int] = field(default_factory=dict)
    """Series removed, by metric name as on the exposition's `# TYPE` line."""
    stale: frozenset[object] = field(default=frozenset(), repr=False)
    """Aggregations trackers must no longer update directly."""


class SeriesExpiry:
    """Removes the usage series of `provider` that were idle for `ttl_s` seconds.

    Belongs to the thread that records: a series must not be updated between the sweep's look
    at it and its removal, or that update would be lost with it.
    """

    def __init__(self, provider: Any, ttl_s: float, *, interval_s: float | None = None) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        if not supported():
            raise RuntimeError("series expiry is not verified for the installed opentelemetry-sdk")
        self._provider = provider
        self.ttl_s = ttl_s
        self.interval_s = (
            interval_s
            if interval_s is not None
            else min(max(ttl_s / 10, MIN_SWEEP_INTERVAL_S), MAX_SWEEP_INTERVAL_S)
        )
        # aggregation -> (its progress, when a sweep first saw it at that progress)
        self._seen: dict[Any, tuple[float, float]] = {}
        self._names: dict[Any, str] = {}  # table -> exposition name
        self._next = float("-inf")

    def due(self, now: float) -> bool:
        return now >= self._next

    def sweep(self, now: float, covered_at: float | None = None) -> Sweep:
        """Remove what has been idle since `now - ttl_s`. `covered_at`: when the newest
        completed scrape was taken (scrape commit mode; -inf if none yet), None if a series
        need not have been scraped before it goes."""
        self._next = now + self.interval_s
        seen: dict[Any, tuple[float, float]] = {}
        expired: Counter[str] = Counter()
        stale: set[object] = set()
        overflows: dict[Any, object] = {}
        shrunk = set()
        for table, key, aggregation in series(self._provider):
            if is_overflow(key):
                overflows[table] = aggregation
            count = progress(aggregation)
            before = self._seen.get(aggregation)
            if before is None or before[0] != count:
                seen[aggregation] = (count, now)
                continue
            since = before[1]
            idle = now - since >= self.ttl_s
            covered = covered_at is None or covered_at > since
            if idle and covered and discard(table, key, aggregation):
                expired[self._name(table)] += 1
                stale.add(aggregation)
                shrunk.add(table)
            else:
                seen[aggregation] = before
        stale.update(overflows[table] for table in shrunk if table in overflows)
        self._seen = seen
        return Sweep(dict(expired), frozenset(stale))

    def _name(self, table: Any) -> str:
        name = self._names.get(table)
        if name is None:
            name = self._names[table] = type_line_name(*metric_of(table))
        return name
