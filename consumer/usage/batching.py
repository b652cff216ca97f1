"""Batch recording: many requests into the tracker's instruments with few SDK calls, exactly.

`BatchRecorder.record` produces exactly the metrics that `TokenTracker.record_usage` on each
request, in order, would: the same series with the same sums, the same histogram data (count,
sum, min, max, buckets), the same series winning the SDK's cardinality-limit slots, and the same
order of metrics in an export (tests/test_tracker.py holds it to that with hypothesis).

How: counters are summed per attribute set over the batch; latencies are grouped per set. The
first measurement of every (instrument, attribute set) goes through the public API, in the order
per-event recording would first have made it, so series are created (or overflow) exactly as they
would be. Later values go straight into the aggregation object that first measurement landed in
(consumer.usage._otel_fastpath), when that path is verified for the SDK in use; otherwise every
add and record stays public.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import Final, cast

from opentelemetry.metrics import Counter, Histogram

from consumer.usage._otel_fastpath import (
    Aggregations,
    add_to_sums,
    forget,
    merge_into_histograms,
    resolve,
    usable,
)
from consumer.usage.options import (
    LLM_LABELS,
    STATUS_ERROR,
    TOKEN_TYPE_CACHE,
    TOKEN_TYPE_SYSTEM,
    Attributes,
    LabelKey,
    UsageLike,
    with_token_type,
)

__all__ = ["DEFAULT_REMEMBERED_SETS", "SLOTS", "BatchRecorder"]

# Instrument slots, numbered in record_usage's order of use.
INPUT: Final = 0
OUTPUT: Final = 1
TOTAL: Final = 2
CACHE: Final = 3
SYSTEM: Final = 4
REQUESTS: Final = 5
DURATION: Final = 6
ERRORS: Final = 7
SLOTS: Final = 8

#: Attribute sets whose resolved aggregations the recorder remembers, by default. Past it, new
#: sets are recorded through the public API (correct, slower): a flood of distinct names must
#: not grow memory here either. Set it to the SDK's cardinality limit, beyond which every new
#: set lands in the overflow series anyway.
DEFAULT_REMEMBERED_SETS: Final = 10_000


class BatchRecorder:
    """Records batches into the tracker's eight instruments (given in slot order).

    Keeps a cache of resolved series, so it belongs to one thread.
    """

    __slots__ = ("_fast", "_instruments", "_remembered_sets", "_states")

    def __init__(
        self,
        instruments: tuple[Counter | Histogram, ...],
        *,
        remembered_sets: int = DEFAULT_REMEMBERED_SETS,
    ) -> None:
        if len(instruments) != SLOTS:
            raise ValueError(f"expected {SLOTS} instruments, got {len(instruments)}")
        self._instruments = instruments
        self._fast = all(usable(instrument) for instrument in instruments)
        self._states: dict[LabelKey, _SeriesState] = {}
        self._remembered_sets = remembered_sets

    @property
    def fast(self) -> bool:
        """Whether direct aggregation updates are verified for these instruments' SDK."""
        return self._fast

    def record(self, opts: Iterable[UsageLike]) -> int:
        """Record many requests; return how many were recorded.

        ``opts`` is consumed completely before anything is recorded, so if iterating it raises,
        nothing of that batch reaches the instruments.
        """
        batch: dict[LabelKey, _Pending] = {}
        # (instrument slot, pending set) for every first use of a not-yet-resolved pair, in the
        # order record_usage would have made them.
        first_uses: list[tuple[int, _Pending]] = []
        count = 0
        label_key = LLM_LABELS.key
        for o in opts:
            count += 1
            # Before truncation: cached per set.
            raw = label_key(o)
            pending = batch.get(raw)
            if pending is None:
                pending = batch[raw] = _Pending(self._series_state(raw))
            sums = pending.sums
            unresolved = pending.state.unresolved
            # Same conditions, same order as record_usage.
            input_tokens = o.input_tokens
            output_tokens = o.output_tokens
            total = input_tokens + output_tokens
            if input_tokens > 0:
                if not sums[INPUT] and unresolved[INPUT]:
                    first_uses.append((INPUT, pending))
                sums[INPUT] += input_tokens
            if output_tokens > 0:
                if not sums[OUTPUT] and unresolved[OUTPUT]:
                    first_uses.append((OUTPUT, pending))
                sums[OUTPUT] += output_tokens
            if total > 0:
                if not sums[TOTAL] and unresolved[TOTAL]:
                    first_uses.append((TOTAL, pending))
                sums[TOTAL] += total
            if o.cache_input_tokens > 0:
                if not sums[CACHE] and unresolved[CACHE]:
                    first_uses.append((CACHE, pending))
                sums[CACHE] += o.cache_input_tokens
            if o.system_tokens > 0:
                if not sums[SYSTEM] and unresolved[SYSTEM]:
                    first_uses.append((SYSTEM, pending))
                sums[SYSTEM] += o.system_tokens
            if not sums[REQUESTS] and unresolved[REQUESTS]:
                first_uses.append((REQUESTS, pending))
            sums[REQUESTS] += 1
            if o.latency_ms > 0:
                if not pending.latencies and unresolved[DURATION]:
                    first_uses.append((DURATION, pending))
                pending.latencies.append(float(o.latency_ms))
            if o.status == STATUS_ERROR:
                if not sums[ERRORS] and unresolved[ERRORS]:
                    first_uses.append((ERRORS, pending))
                sums[ERRORS] += 1

        instruments = self._instruments
        duration = cast(Histogram, instruments[DURATION])
        # Public first measurements, in per-event order: they create (or overflow) the series.
        for slot, pending in first_uses:
            state = pending.state
            instrument = instruments[slot]
            attrs = state.attributes[slot]
            if slot == DURATION:
                latencies = pending.latencies
                duration.record(latencies[0], attrs)
                rest = latencies[1:]
                aggregations = state.resolve(slot, instrument)
                if aggregations is not None and rest:
                    merge_into_histograms(aggregations, rest)
                else:
                    for latency in rest:
                        duration.record(latency, attrs)
                pending.latencies = []
            else:
                cast(Counter, instrument).add(pending.sums[slot], attrs)
                state.resolve(slot, instrument)
                pending.sums[slot] = 0
        # Everything else lands in aggregations already resolved.
        for pending in batch.values():
            aggregations_of = pending.state.aggregations
            for slot, amount in enumerate(pending.sums):
                if amount:
                    add_to_sums(aggregations_of[slot], amount)  # type: ignore[arg-type]
            if pending.latencies:
                merge_into_histograms(aggregations_of[DURATION], pending.latencies)  # type: ignore[arg-type]
        return count

    def forget(self, stale: AbstractSet[object]) -> None:
        """Stop updating these aggregations directly (an expiry removed them, or they are an
        overflow series a set might now leave): the next use of each series goes public again."""
        if not stale:
            return
        for state in self._states.values():
            for slot in forget(state.aggregations, stale):
                state.unresolved[slot] = True

    def _series_state(self, raw: LabelKey) -> _SeriesState:
        state = self._states.get(raw)
        if state is None:
            state = _SeriesState(LLM_LABELS.attributes(LLM_LABELS.canonical(raw)), self._fast)
            # Bounded: past the limit, new sets are simply not remembered (and stay public).
            if len(self._states) < self._remembered_sets:
                self._states[raw] = state
        return state


class _SeriesState:
    """What the recorder remembers of one attribute set across batches."""

    __slots__ = ("aggregations", "attributes", "fast", "unresolved")

    def __init__(self, attrs: Attributes, fast: bool) -> None:
        cache = with_token_type(attrs, TOKEN_TYPE_CACHE)
        system = with_token_type(attrs, TOKEN_TYPE_SYSTEM)
        self.attributes = (attrs, attrs, attrs, cache, system, attrs, attrs, attrs)
        self.aggregations: list[Aggregations | None] = [None] * SLOTS
        self.unresolved = [True] * SLOTS
        self.fast = fast

    def resolve(self, slot: int, instrument: Counter | Histogram) -> Aggregations | None:
        if not self.fast:
            return None
        found = resolve(instrument, self.attributes[slot])
        if found is not None:
            self.aggregations[slot] = found
            self.unresolved[slot] = False
        return found


class _Pending:
    """One attribute set's share of one batch."""

    __slots__ = ("latencies", "state", "sums")

    def __init__(self, state: _SeriesState) -> None:
        self.state = state
        self.sums = [0] * SLOTS  # DURATION's slot stays 0: latencies are kept one by one
        self.latencies: list[float] = []
