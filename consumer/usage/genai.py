"""The `genai` metrics profile: what the gateway's tracker records today.

From tag v0.260716.1 on, the gateway's tracker records the OpenTelemetry GenAI semantic
conventions' client metrics instead of the seed's `llm.*` instruments:

* ``gen_ai.client.token.usage``: an int histogram, one value per token type (input, output,
  cache_read, cache_write, system) whose count is > 0, with ``gen_ai.token.type``; never with
  the status or an error type.
* ``gen_ai.client.operation.duration``: seconds, one value per request, always (0 included;
  a negative latency, which only a hand-built UsageOptions can carry, is no measurement); a
  request whose status is ``error`` adds ``error.type`` (its error code cut to 64 bytes, or
  ``_OTHER``). Canceled requests carry none: client disconnects must not trip error alerts.

Names, units and descriptions come from `opentelemetry-semantic-conventions`; the bucket
boundaries are the conventions' advice, which the tracker passes. The attributes are
`GENAI_LABELS` (consumer.usage.options).

`record_batch` is exact, as the llm profile's is (tests/test_profiles.py): the first value of a
series goes through the public API at its event's place (creating the series, or landing in the
overflow series), and the series' later values are gathered per series and merged into the
aggregation that measurement resolved to (consumer.usage._otel_fastpath), each series' values in
event order. With partition-affine keys a batch holds a few hundred sets, so most series take
several values a batch: one merge under one lock costs much less than a record per value. The
overflow series is shared by many sets, so its values are applied one by one, in event order.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Final

from opentelemetry.metrics import Histogram, Meter
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import GEN_AI_TOKEN_TYPE
from opentelemetry.semconv._incubating.metrics.gen_ai_metrics import (
    create_gen_ai_client_operation_duration,
    create_gen_ai_client_token_usage,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE, ErrorTypeValues

from consumer.usage._otel_fastpath import (
    Aggregations,
    forget,
    merge_into_histograms,
    record_into_histograms,
    resolve_series,
    usable,
)
from consumer.usage.batching import DEFAULT_REMEMBERED_SETS
from consumer.usage.options import (
    GENAI_LABELS,
    MAX_ERROR_CODE_BYTES,
    STATUS_ERROR,
    Attributes,
    LabelKey,
    UsageLike,
    UsageOptions,
    truncate_utf8,
)

__all__ = [
    "DURATION_BUCKETS_S",
    "TOKEN_TYPES",
    "TOKEN_USAGE_BUCKETS",
    "GenAiTracker",
]

#: Bucket boundaries of ``gen_ai.client.token.usage`` (the semantic conventions' advice).
TOKEN_USAGE_BUCKETS: Final[tuple[int, ...]] = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
)
#: Bucket boundaries of ``gen_ai.client.operation.duration``, seconds (the conventions' advice).
DURATION_BUCKETS_S: Final[tuple[float, ...]] = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)

#: ``gen_ai.token.type`` values, in the order the tracker records them, with the field of each.
TOKEN_TYPES: Final = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache_read", "cache_read_tokens"),
    ("cache_write", "cache_write_tokens"),
    ("system", "system_tokens"),
)
_TOKENS: Final = operator.attrgetter(*(field for _, field in TOKEN_TYPES))
_SLOTS: Final = len(TOKEN_TYPES)  # token slots 0..4; the duration's is _SLOTS
# A batch's series key: the label values, then what decides error.type.
_BATCH_KEY: Final = operator.attrgetter(*GENAI_LABELS.fields, "status", "error_code")
_LABELS: Final = len(GENAI_LABELS.labels)


class _Bucketed:
    """A Meter whose histograms get explicit bucket advice: the semantic conventions' factories
    give names, units and descriptions but no buckets."""

    def __init__(self, meter: Meter, boundaries: Sequence[float]) -> None:
        self._meter = meter
        self._boundaries = [float(b) for b in boundaries]

    def create_histogram(self, name: str, unit: str = "", description: str = "") -> Histogram:
        return self._meter.create_histogram(
            name,
            unit=unit,
            description=description,
            explicit_bucket_boundaries_advisory=self._boundaries,
        )


def _error_type(status: Any, error_code: Any) -> str | None:
    if status != STATUS_ERROR:
        return None
    return (
        truncate_utf8(error_code, MAX_ERROR_CODE_BYTES)
        if error_code
        else ErrorTypeValues.OTHER.value
    )


def _duration_attributes(attrs: Attributes, error_type: str | None) -> Attributes:
    return attrs if error_type is None else {**attrs, ERROR_TYPE: error_type}


class GenAiTracker:
    """Records requests as the GenAI semantic conventions' client metrics.

    ``record_usage`` may be called from any thread; ``record_batch`` keeps a cache of resolved
    series and belongs to one thread.
    """

    __slots__ = (
        "_by_attributes",
        "_duration",
        "_fast",
        "_remembered_sets",
        "_states",
        "_tokens",
    )

    def __init__(self, meter: Meter, *, remembered_sets: int = DEFAULT_REMEMBERED_SETS) -> None:
        self._tokens: Histogram = create_gen_ai_client_token_usage(
            _Bucketed(meter, TOKEN_USAGE_BUCKETS)  # type: ignore[arg-type]
        )
        self._duration: Histogram = create_gen_ai_client_operation_duration(
            _Bucketed(meter, DURATION_BUCKETS_S)  # type: ignore[arg-type]
        )
        self._fast = usable(self._tokens) and usable(self._duration)
        self._states: dict[LabelKey, _SeriesState] = {}  # by batch key, as sent
        self._by_attributes: dict[LabelKey, _SeriesState] = {}  # by canonical key
        self._remembered_sets = remembered_sets

    def record_usage(self, opts: UsageOptions | UsageLike) -> None:
        """Record one request, as the gateway's ``RecordUsage`` does."""
        attrs = GENAI_LABELS.of(opts)
        for (token_type, _field), count in zip(TOKEN_TYPES, _TOKENS(opts), strict=True):
            if count > 0:
                self._tokens.record(count, {**attrs, GEN_AI_TOKEN_TYPE: token_type})
        if opts.latency_ms >= 0:  # the SDK would drop a negative value, with a warning each time
            error_type = _error_type(opts.status, opts.error_code)
            self._duration.record(opts.latency_ms / 1000, _duration_attributes(attrs, error_type))

    def record_batch(self, opts: Iterable[UsageLike]) -> int:
        """Record many requests; exactly what `record_usage` on each, in order, would record.

        Every aggregation sees the same values in the same order as per-event recording (float
        sums depend on it), and every series is created, by a public measurement, at its
        event's place. What is saved is the SDK's per-measurement work (cleaning and hashing
        the attributes) and, for a series' own aggregation, a lock and a call per value.

        ``opts`` is consumed completely before anything is recorded, so if iterating it raises,
        nothing of that batch reaches the instruments.
        """
        events = opts if isinstance(opts, list) else list(opts)
        states = self._states
        first = self._first
        record = record_into_histograms
        gathered: list[tuple[Aggregations, list[float]]] = []  # series with values to merge
        for o in events:
            key = _BATCH_KEY(o)
            state = states.get(key) or self._state(key)
            found = state.aggregations
            pending = state.pending
            # The token counts, then the duration: a token type is recorded when its count is
            # above 0, the duration whenever the latency is not negative (0 included).
            for slot, value in enumerate((*_TOKENS(o), o.latency_ms / 1000)):
                if value <= 0 and (value < 0 or slot != _SLOTS):
                    continue
                values = pending[slot]
                if values is not None:  # the set's own series: merged after the loop
                    if not values:
                        gathered.append((found[slot], values))  # type: ignore[arg-type]
                    values.append(value)
                elif (into := found[slot]) is None:
                    first(state, slot, value)
                else:  # the shared overflow series: in event order across sets
                    record(into, value)
        for aggregations, values in gathered:
            merge_into_histograms(aggregations, values)
            values.clear()
        return len(events)

    def forget(self, stale: AbstractSet[object]) -> None:
        """Stop updating these SDK aggregations directly (series an idle expiry removed, see
        consumer.usage.expiry); `record_batch` resolves their sets afresh on next use."""
        if not stale:
            return
        for state in self._by_attributes.values():
            for slot in forget(state.aggregations, stale):
                state.pending[slot] = None

    def _first(self, state: _SeriesState, slot: int, value: float) -> None:
        """A public measurement: it creates the series (or lands in the overflow series); then
        remember the aggregation it updated, if the fast path may update it directly."""
        if slot == _SLOTS:
            self._duration.record(value, state.duration_attributes)
            state.resolve(slot, self._duration)
        else:
            self._tokens.record(value, state.token_attributes[slot])
            state.resolve(slot, self._tokens)

    def _state(self, key: LabelKey) -> _SeriesState:
        canonical = (
            *GENAI_LABELS.canonical(key[:_LABELS]),
            _error_type(key[_LABELS], key[_LABELS + 1]),
        )
        state = self._by_attributes.get(canonical)
        if state is None:
            attrs = GENAI_LABELS.attributes(canonical[:_LABELS])
            state = _SeriesState(attrs, canonical[_LABELS], self._fast)  # type: ignore[arg-type]
        # Bounded: past the limit, new sets are simply not remembered (and stay public).
        if len(self._states) < self._remembered_sets:
            self._states[key] = state
            self._by_attributes[canonical] = state
        return state


class _SeriesState:
    """What the tracker remembers of one attribute set across batches: its five token series
    and its duration series, the aggregations each resolved to, and the values of a batch
    waiting to be merged into a series of its own."""

    __slots__ = ("aggregations", "duration_attributes", "fast", "pending", "token_attributes")

    def __init__(self, attrs: Attributes, error_type: str | None, fast: bool) -> None:
        self.token_attributes = tuple(
            {**attrs, GEN_AI_TOKEN_TYPE: token_type} for token_type, _ in TOKEN_TYPES
        )
        self.duration_attributes = _duration_attributes(attrs, error_type)
        self.aggregations: list[Aggregations | None] = [None] * (_SLOTS + 1)
        # Per slot: a list (empty between batches) once the slot resolved to the set's own
        # series; None while unresolved or when it resolved to the shared overflow series.
        self.pending: list[list[float] | None] = [None] * (_SLOTS + 1)
        self.fast = fast

    def resolve(self, slot: int, instrument: Histogram) -> None:
        if not self.fast:
            return
        attributes = self.duration_attributes if slot == _SLOTS else self.token_attributes[slot]
        found = resolve_series(instrument, attributes)
        if found is not None:
            self.aggregations[slot], shared = found
            self.pending[slot] = None if shared else []
