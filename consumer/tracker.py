"""Token usage tracking: a Python port of the gateway's Go ``tracker`` package.

:class:`TokenTracker` records one LLM gateway request (:class:`UsageOptions`) as OpenTelemetry
metrics. Every instrument name, kind, unit, description, attribute key and recording rule is the
same as in the original package, so dashboards built for the gateway work unchanged on what this
project exports (the rules are restated in the README, "Metrics exported").

Two entry points:

* :meth:`TokenTracker.record_usage` records one request, exactly like the Go ``RecordUsage``.
* :meth:`TokenTracker.record_batch` records many requests and produces exactly the metrics that
  calling ``record_usage`` on each would (same series, sums, histogram data and the same series
  winning the SDK's cardinality-limit slots), with far fewer SDK calls: counters are summed per
  attribute set and added once per set per batch, the histogram is recorded per event.

This module depends only on the OpenTelemetry metrics *API*; the SDK, views, readers and the
cardinality limit are configured by whoever builds the ``MeterProvider``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias, cast

from opentelemetry.metrics import Counter, Histogram, Meter
from opentelemetry.util.types import AttributeValue

from consumer._otel_fastpath import (
    Aggregations,
    add_to_sums,
    merge_into_histograms,
    resolve,
    usable,
)

__all__ = [
    "ATTR_ERROR_CODE",
    "ATTR_MODEL",
    "ATTR_PROVIDER",
    "ATTR_PROVIDER_UUID",
    "ATTR_REQUEST_MODEL",
    "ATTR_RESPONSE_STATUS",
    "ATTR_RULE_UUID",
    "ATTR_SCENARIO",
    "ATTR_STREAMING",
    "ATTR_TOKEN_TYPE",
    "ATTR_USER_TIER",
    "DURATION_BUCKETS_MS",
    "MAX_ERROR_CODE_BYTES",
    "METRIC_CACHE_INPUT_TOKENS",
    "METRIC_INPUT_TOKENS",
    "METRIC_OUTPUT_TOKENS",
    "METRIC_REQUEST_COUNT",
    "METRIC_REQUEST_DURATION",
    "METRIC_REQUEST_ERRORS",
    "METRIC_SYSTEM_TOKENS",
    "METRIC_TOTAL_TOKENS",
    "STATUS_CANCELED",
    "STATUS_ERROR",
    "STATUS_SUCCESS",
    "TOKEN_TYPE_CACHE",
    "TOKEN_TYPE_SYSTEM",
    "TokenTracker",
    "UsageLike",
    "UsageOptions",
    "truncate_utf8",
]

# --- Instrument names (a contract: dashboards query these) -------------------------------------

METRIC_INPUT_TOKENS: Final = "llm.token.usage.input"
METRIC_OUTPUT_TOKENS: Final = "llm.token.usage.output"
METRIC_TOTAL_TOKENS: Final = "llm.token.total"
METRIC_CACHE_INPUT_TOKENS: Final = "llm.token.cache.input"
METRIC_SYSTEM_TOKENS: Final = "llm.token.system"
METRIC_REQUEST_COUNT: Final = "llm.request.count"
METRIC_REQUEST_DURATION: Final = "llm.request.duration"
METRIC_REQUEST_ERRORS: Final = "llm.request.errors"

# --- Attribute keys (a contract as well) --------------------------------------------------------

ATTR_PROVIDER: Final = "llm.provider"
ATTR_PROVIDER_UUID: Final = "llm.provider.uuid"
ATTR_MODEL: Final = "llm.model"
ATTR_REQUEST_MODEL: Final = "llm.request.model"
ATTR_SCENARIO: Final = "llm.scenario"
ATTR_STREAMING: Final = "llm.streaming"
ATTR_RESPONSE_STATUS: Final = "llm.response.status"
ATTR_RULE_UUID: Final = "llm.rule.uuid"
ATTR_USER_TIER: Final = "llm.user.tier"
ATTR_ERROR_CODE: Final = "llm.error.code"
ATTR_TOKEN_TYPE: Final = "llm.token_type"  # noqa: S105 (an attribute key, not a secret)

TOKEN_TYPE_CACHE: Final = "cache"  # noqa: S105 (attribute value)
TOKEN_TYPE_SYSTEM: Final = "system"  # noqa: S105 (attribute value)

STATUS_SUCCESS: Final = "success"
STATUS_ERROR: Final = "error"
STATUS_CANCELED: Final = "canceled"

#: Error codes are cut to at most this many UTF-8 bytes: every distinct attribute set is a series
#: the SDK keeps for the life of the process, so free-form error text must not reach it uncut.
MAX_ERROR_CODE_BYTES: Final = 64

#: Bucket boundaries (milliseconds) of ``llm.request.duration``.
#:
#: The SDK's default boundaries stop at 10,000 ms, yet LLM calls routinely run for minutes, so
#: every long call would land in the single ``+Inf`` bucket and its quantiles would be unusable.
#: These cover both ends of what a gateway sees:
#:
#: * 50 ms - 1 s: fast failures and rejections, cache hits, tiny completions - the range
#:   where first tokens of a streamed call arrive (``latency_ms`` is the whole request, so a
#:   streamed call only lands here when it is short, but errors and rejections live here);
#: * 1 s - 30 s: ordinary chat/completion calls;
#: * 1 - 10 min: long generations, agentic/tool loops and reasoning models, up to the
#:   timeouts gateways commonly use (anything longer is ``+Inf``).
#:
#: Roughly 1-2.5-5 steps per decade keep relative error bounded for ``histogram_quantile``.
#: The count is deliberately small: every bucket is one more Prometheus series per attribute set
#: (14 bounds -> 15 ``_bucket`` series + ``_sum`` + ``_count`` per set), so adding bounds
#: multiplies the scrape size of the biggest metric.
DURATION_BUCKETS_MS: Final[tuple[float, ...]] = (
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    20_000.0,
    30_000.0,
    60_000.0,
    120_000.0,
    300_000.0,
    600_000.0,
)


def truncate_utf8(s: str, max_bytes: int) -> str:
    """Return the longest prefix of ``s`` whose UTF-8 encoding is at most ``max_bytes`` bytes.

    Unlike a plain byte cut (what the Go original does), this never splits a character: a
    multi-byte character that would straddle the limit is dropped whole. Lone surrogates (which
    can come out of JSON ``\\ud800`` escapes) count as the 3 bytes they take in ``surrogatepass``
    encoding and are kept as they are.
    """
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    # A code point takes at most 4 bytes in UTF-8: short strings need no encoding at all.
    if len(s) * 4 <= max_bytes:
        return s
    encoded = s.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return s
    cut = max_bytes
    # encoded[cut] is the first byte dropped; while it is a continuation byte (0b10xxxxxx), the
    # character it belongs to started before the cut: back up to that character's lead byte.
    while cut > 0 and (encoded[cut] & 0xC0) == 0x80:
        cut -= 1
    return encoded[:cut].decode("utf-8", "surrogatepass")


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageOptions:
    """The options for recording the token usage of one LLM gateway request."""

    provider: str = ""
    """Name of the LLM provider (e.g. ``"openai"``, ``"anthropic"``)."""

    provider_uuid: str = ""
    """Unique identifier of the provider."""

    model: str = ""
    """The model actually used (not the requested model)."""

    request_model: str = ""
    """The original model name requested by the user."""

    rule_uuid: str = ""
    """The load balancer rule UUID."""

    scenario: str = ""
    """The API scenario (e.g. ``"openai"``, ``"anthropic"``, ``"claude_code"``)."""

    input_tokens: int = 0
    """Number of input/prompt tokens consumed (excluding cache)."""

    output_tokens: int = 0
    """Number of output/completion tokens consumed."""

    cache_input_tokens: int = 0
    """Number of cache-related tokens consumed."""

    system_tokens: int = 0
    """Tokens consumed by system-level operations."""

    streamed: bool = False
    """Whether this was a streaming request."""

    status: str = ""
    """The request status: ``"success"``, ``"error"`` or ``"canceled"``."""

    error_code: str = ""
    """The error code if status is not ``"success"``."""

    latency_ms: int = 0
    """The request processing time in milliseconds."""

    user_tier: str = ""
    """A low-cardinality class for enterprise observability."""


class UsageLike(Protocol):
    """Anything with UsageOptions' fields: record_batch reads them, never copies the object.

    A validated event (schemas.UsageEventV1) qualifies, so the worker records events as decoded.
    """

    @property
    def provider(self) -> str: ...
    @property
    def provider_uuid(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def request_model(self) -> str: ...
    @property
    def rule_uuid(self) -> str: ...
    @property
    def scenario(self) -> str: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cache_input_tokens(self) -> int: ...
    @property
    def system_tokens(self) -> int: ...
    @property
    def streamed(self) -> bool: ...
    @property
    def status(self) -> str: ...
    @property
    def error_code(self) -> str: ...
    @property
    def latency_ms(self) -> int: ...
    @property
    def user_tier(self) -> str: ...


_Attributes: TypeAlias = dict[str, AttributeValue]
# The fields that determine a request's attribute set, error code already truncated:
# (provider, provider_uuid, model, request_model, rule_uuid, scenario, streamed, status,
#  error_code, user_tier).
_AttrKey: TypeAlias = tuple[str, str, str, str, str, str, bool, str, str, str]


def _attr_key(opts: UsageLike) -> _AttrKey:
    return _canonical_key(
        (
            opts.provider,
            opts.provider_uuid,
            opts.model,
            opts.request_model,
            opts.rule_uuid,
            opts.scenario,
            opts.streamed,
            opts.status,
            opts.error_code,
            opts.user_tier,
        )
    )


def _canonical_key(raw: _AttrKey) -> _AttrKey:
    """`raw` with its error code cut as an attribute value is."""
    error_code = truncate_utf8(raw[8], MAX_ERROR_CODE_BYTES)
    return raw if error_code == raw[8] else (*raw[:8], error_code, raw[9])


def _build_attributes(key: _AttrKey) -> _Attributes:
    """Build the attribute set of one request from its (already truncated) key."""
    (
        provider,
        provider_uuid,
        model,
        request_model,
        rule_uuid,
        scenario,
        streamed,
        status,
        error_code,
        user_tier,
    ) = key
    # Always present, even when empty. Latency is never an attribute: it is near-unique per
    # request and would create one series per request.
    attrs: _Attributes = {
        ATTR_PROVIDER: provider,
        ATTR_PROVIDER_UUID: provider_uuid,
        ATTR_MODEL: model,
        ATTR_REQUEST_MODEL: request_model,
        ATTR_SCENARIO: scenario,
        ATTR_STREAMING: streamed,
        ATTR_RESPONSE_STATUS: status,
    }
    # Present only when non-empty.
    if rule_uuid:
        attrs[ATTR_RULE_UUID] = rule_uuid
    if user_tier:
        attrs[ATTR_USER_TIER] = user_tier
    if error_code:
        attrs[ATTR_ERROR_CODE] = error_code
    return attrs


def _with_token_type(attrs: _Attributes, token_type: str) -> _Attributes:
    extended = dict(attrs)
    extended[ATTR_TOKEN_TYPE] = token_type
    return extended


# Instrument slots in record_batch, numbered in record_usage's order of use.
_INPUT: Final = 0
_OUTPUT: Final = 1
_TOTAL: Final = 2
_CACHE: Final = 3
_SYSTEM: Final = 4
_REQUESTS: Final = 5
_DURATION: Final = 6
_ERRORS: Final = 7
_SLOTS: Final = 8

#: Attribute sets whose resolved aggregations record_batch remembers, by default. Past it, new
#: sets are recorded through the public API (correct, slower): a flood of distinct names must
#: not grow memory here either. Set it to the SDK's cardinality limit, beyond which every new
#: set lands in the overflow series anyway.
DEFAULT_REMEMBERED_SETS: Final = 10_000


class TokenTracker:
    """Records LLM token usage through OpenTelemetry metrics instruments.

    The eight instruments are created once from the meter handed in. ``record_usage`` may be
    called from any thread (all its state lives in the SDK, which locks per aggregation);
    ``record_batch`` keeps a cache of resolved series and belongs to one thread.
    """

    __slots__ = (
        "_cache_input_tokens",
        "_fast",
        "_input_tokens",
        "_instruments",
        "_output_tokens",
        "_remembered_sets",
        "_request_count",
        "_request_duration",
        "_request_errors",
        "_states",
        "_system_tokens",
        "_total_tokens",
    )

    def __init__(self, meter: Meter, *, remembered_sets: int = DEFAULT_REMEMBERED_SETS) -> None:
        self._input_tokens: Counter = meter.create_counter(
            METRIC_INPUT_TOKENS, unit="{token}", description="LLM input/prompt token usage"
        )
        self._output_tokens: Counter = meter.create_counter(
            METRIC_OUTPUT_TOKENS, unit="{token}", description="LLM output/completion token usage"
        )
        self._total_tokens: Counter = meter.create_counter(
            METRIC_TOTAL_TOKENS,
            unit="{token}",
            description="Total LLM tokens consumed (input + output)",
        )
        self._cache_input_tokens: Counter = meter.create_counter(
            METRIC_CACHE_INPUT_TOKENS,
            unit="{token}",
            description="LLM cache-related input token usage",
        )
        self._system_tokens: Counter = meter.create_counter(
            METRIC_SYSTEM_TOKENS,
            unit="{token}",
            description="LLM tokens consumed by system operations",
        )
        self._request_count: Counter = meter.create_counter(
            METRIC_REQUEST_COUNT, unit="{request}", description="Number of LLM requests"
        )
        self._request_duration: Histogram = meter.create_histogram(
            METRIC_REQUEST_DURATION,
            unit="ms",
            description="LLM request duration in milliseconds",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS_MS),
        )
        self._request_errors: Counter = meter.create_counter(
            METRIC_REQUEST_ERRORS, unit="{error}", description="Number of LLM request errors"
        )
        self._instruments: tuple[Counter | Histogram, ...] = (
            self._input_tokens,
            self._output_tokens,
            self._total_tokens,
            self._cache_input_tokens,
            self._system_tokens,
            self._request_count,
            self._request_duration,
            self._request_errors,
        )
        self._fast = all(usable(instrument) for instrument in self._instruments)
        self._states: dict[_AttrKey, _SeriesState] = {}
        self._remembered_sets = remembered_sets

    def record_usage(self, opts: UsageOptions) -> None:
        """Record the token usage of one request (the Go ``RecordUsage``)."""
        attrs = _build_attributes(_attr_key(opts))
        total = opts.input_tokens + opts.output_tokens

        if opts.input_tokens > 0:
            self._input_tokens.add(opts.input_tokens, attrs)
        if opts.output_tokens > 0:
            self._output_tokens.add(opts.output_tokens, attrs)
        # Cache and system tokens are not part of the total.
        if total > 0:
            self._total_tokens.add(total, attrs)
        if opts.cache_input_tokens > 0:
            self._cache_input_tokens.add(
                opts.cache_input_tokens, _with_token_type(attrs, TOKEN_TYPE_CACHE)
            )
        if opts.system_tokens > 0:
            self._system_tokens.add(opts.system_tokens, _with_token_type(attrs, TOKEN_TYPE_SYSTEM))
        self._request_count.add(1, attrs)
        if opts.latency_ms > 0:
            self._request_duration.record(float(opts.latency_ms), attrs)
        if opts.status == STATUS_ERROR:
            self._request_errors.add(1, attrs)

    def record_batch(self, opts: Iterable[UsageLike]) -> int:
        """Record many requests; return how many were recorded.

        The result is exactly what calling :meth:`record_usage` on each request in order would
        produce: the same series with the same sums, the same histogram data (count, sum, min,
        max, buckets), the same series winning the SDK's cardinality-limit slots, and the same
        order of metrics in an export.

        How: counters are summed per attribute set over the batch; latencies are grouped per
        set. The first measurement of every (instrument, attribute set) goes through the public
        API, in the order per-event recording would first have made it, so series are created
        (or overflow) exactly as they would be. Later values go straight into the aggregation
        object that first measurement landed in (consumer._otel_fastpath), when that path is
        verified for the SDK in use; otherwise every add and record stays public.

        ``opts`` is consumed completely before anything is recorded, so if iterating it raises,
        nothing of that batch reaches the instruments.
        """
        batch: dict[_AttrKey, _Pending] = {}
        # (instrument slot, pending set) for every first use of a not-yet-resolved pair, in the
        # order record_usage would have made them.
        first_uses: list[tuple[int, _Pending]] = []
        count = 0
        for o in opts:
            count += 1
            # _attr_key's tuple, inlined (the hot path), and before truncation: cached per set.
            raw: _AttrKey = (
                o.provider,
                o.provider_uuid,
                o.model,
                o.request_model,
                o.rule_uuid,
                o.scenario,
                o.streamed,
                o.status,
                o.error_code,
                o.user_tier,
            )
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
                if not sums[_INPUT] and unresolved[_INPUT]:
                    first_uses.append((_INPUT, pending))
                sums[_INPUT] += input_tokens
            if output_tokens > 0:
                if not sums[_OUTPUT] and unresolved[_OUTPUT]:
                    first_uses.append((_OUTPUT, pending))
                sums[_OUTPUT] += output_tokens
            if total > 0:
                if not sums[_TOTAL] and unresolved[_TOTAL]:
                    first_uses.append((_TOTAL, pending))
                sums[_TOTAL] += total
            if o.cache_input_tokens > 0:
                if not sums[_CACHE] and unresolved[_CACHE]:
                    first_uses.append((_CACHE, pending))
                sums[_CACHE] += o.cache_input_tokens
            if o.system_tokens > 0:
                if not sums[_SYSTEM] and unresolved[_SYSTEM]:
                    first_uses.append((_SYSTEM, pending))
                sums[_SYSTEM] += o.system_tokens
            if not sums[_REQUESTS] and unresolved[_REQUESTS]:
                first_uses.append((_REQUESTS, pending))
            sums[_REQUESTS] += 1
            if o.latency_ms > 0:
                if not pending.latencies and unresolved[_DURATION]:
                    first_uses.append((_DURATION, pending))
                pending.latencies.append(float(o.latency_ms))
            if o.status == STATUS_ERROR:
                if not sums[_ERRORS] and unresolved[_ERRORS]:
                    first_uses.append((_ERRORS, pending))
                sums[_ERRORS] += 1

        instruments = self._instruments
        # Public first measurements, in per-event order: they create (or overflow) the series.
        for slot, pending in first_uses:
            state = pending.state
            instrument = instruments[slot]
            attrs = state.attributes[slot]
            if slot == _DURATION:
                latencies = pending.latencies
                self._request_duration.record(latencies[0], attrs)
                rest = latencies[1:]
                aggregations = state.resolve(slot, instrument)
                if aggregations is not None and rest:
                    merge_into_histograms(aggregations, rest)
                else:
                    for latency in rest:
                        self._request_duration.record(latency, attrs)
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
                merge_into_histograms(aggregations_of[_DURATION], pending.latencies)  # type: ignore[arg-type]
        return count

    def _series_state(self, raw: _AttrKey) -> _SeriesState:
        state = self._states.get(raw)
        if state is None:
            state = _SeriesState(_build_attributes(_canonical_key(raw)), self._fast)
            # Bounded: past the limit, new sets are simply not remembered (and stay public).
            if len(self._states) < self._remembered_sets:
                self._states[raw] = state
        return state


class _SeriesState:
    """What the tracker remembers of one attribute set across batches."""

    __slots__ = ("aggregations", "attributes", "fast", "unresolved")

    def __init__(self, attrs: _Attributes, fast: bool) -> None:
        cache = _with_token_type(attrs, TOKEN_TYPE_CACHE)
        system = _with_token_type(attrs, TOKEN_TYPE_SYSTEM)
        self.attributes = (attrs, attrs, attrs, cache, system, attrs, attrs, attrs)
        self.aggregations: list[Aggregations | None] = [None] * _SLOTS
        self.unresolved = [True] * _SLOTS
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
        self.sums = [0] * _SLOTS  # _DURATION's slot stays 0: latencies are kept one by one
        self.latencies: list[float] = []
