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
from typing import Final, TypeAlias

from opentelemetry.metrics import Counter, Histogram, Meter
from opentelemetry.util.types import AttributeValue

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


_Attributes: TypeAlias = dict[str, AttributeValue]
# The fields that determine a request's attribute set, error code already truncated:
# (provider, provider_uuid, model, request_model, rule_uuid, scenario, streamed, status,
#  error_code, user_tier).
_AttrKey: TypeAlias = tuple[str, str, str, str, str, str, bool, str, str, str]


def _attr_key(opts: UsageOptions) -> _AttrKey:
    return (
        opts.provider,
        opts.provider_uuid,
        opts.model,
        opts.request_model,
        opts.rule_uuid,
        opts.scenario,
        opts.streamed,
        opts.status,
        truncate_utf8(opts.error_code, MAX_ERROR_CODE_BYTES),
        opts.user_tier,
    )


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


class TokenTracker:
    """Records LLM token usage through OpenTelemetry metrics instruments.

    The eight instruments are created once from the meter handed in. Instances are safe to share
    between threads: all state lives in the SDK, which locks per aggregation.
    """

    __slots__ = (
        "_cache_input_tokens",
        "_input_tokens",
        "_output_tokens",
        "_request_count",
        "_request_duration",
        "_request_errors",
        "_system_tokens",
        "_total_tokens",
    )

    def __init__(self, meter: Meter) -> None:
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

    def record_batch(self, opts: Iterable[UsageOptions]) -> int:
        """Record many requests; return how many were recorded.

        The result is exactly what calling :meth:`record_usage` on each request in order would
        produce: the same series with the same sums, the same histogram data, and - because each
        counter's attribute sets are first added in the order the per-event path would first
        have added them - the same series winning the SDK's cardinality-limit slots (and the same
        overflow series). Counters are added once per attribute set, only where the per-event
        path would have added at all (never a 0); the histogram has no public batch API and is
        recorded per event, in event order, with the same float values. Instruments are flushed
        in the order the per-event path would first have used them, so even the order of the
        metrics in an export (and so the Prometheus exposition text) is the same.

        ``opts`` is consumed completely before anything is recorded, so if iterating it raises,
        nothing of that batch reaches the instruments (no partial batch to double-count when it
        is redelivered).
        """
        # Raw key -> (canonical key, shared attribute dict). Two raw keys whose error codes
        # truncate to the same prefix share one canonical key, hence one series and one add.
        seen: dict[_AttrKey, tuple[_AttrKey, _Attributes]] = {}
        canonical: dict[_AttrKey, _Attributes] = {}
        # One ordered dict per counter, so each keeps its own first-add order.
        input_sums: dict[_AttrKey, int] = {}
        output_sums: dict[_AttrKey, int] = {}
        total_sums: dict[_AttrKey, int] = {}
        cache_sums: dict[_AttrKey, int] = {}
        system_sums: dict[_AttrKey, int] = {}
        request_counts: dict[_AttrKey, int] = {}
        error_counts: dict[_AttrKey, int] = {}
        durations: list[tuple[float, _Attributes]] = []
        # Instruments in the order the per-event path would first use them (the SDK creates a
        # metric stream on its first measurement, and exports streams in creation order).
        first_used: list[int] = []

        count = 0
        for o in opts:
            count += 1
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
            entry = seen.get(raw)
            if entry is None:
                key = _attr_key(o)
                attrs = canonical.get(key)
                if attrs is None:
                    attrs = _build_attributes(key)
                    canonical[key] = attrs
                entry = (key, attrs)
                seen[raw] = entry
            key, attrs = entry

            # Same conditions, same order as record_usage.
            input_tokens = o.input_tokens
            output_tokens = o.output_tokens
            total = input_tokens + output_tokens
            if input_tokens > 0:
                if not input_sums:
                    first_used.append(_INPUT)
                input_sums[key] = input_sums.get(key, 0) + input_tokens
            if output_tokens > 0:
                if not output_sums:
                    first_used.append(_OUTPUT)
                output_sums[key] = output_sums.get(key, 0) + output_tokens
            if total > 0:
                if not total_sums:
                    first_used.append(_TOTAL)
                total_sums[key] = total_sums.get(key, 0) + total
            if o.cache_input_tokens > 0:
                if not cache_sums:
                    first_used.append(_CACHE)
                cache_sums[key] = cache_sums.get(key, 0) + o.cache_input_tokens
            if o.system_tokens > 0:
                if not system_sums:
                    first_used.append(_SYSTEM)
                system_sums[key] = system_sums.get(key, 0) + o.system_tokens
            if not request_counts:
                first_used.append(_REQUESTS)
            request_counts[key] = request_counts.get(key, 0) + 1
            if o.latency_ms > 0:
                if not durations:
                    first_used.append(_DURATION)
                durations.append((float(o.latency_ms), attrs))
            if o.status == STATUS_ERROR:
                if not error_counts:
                    first_used.append(_ERRORS)
                error_counts[key] = error_counts.get(key, 0) + 1

        for instrument in first_used:
            if instrument == _DURATION:
                record = self._request_duration.record
                for latency, attrs in durations:
                    record(latency, attrs)
            elif instrument == _CACHE:
                self._add_sums(self._cache_input_tokens, cache_sums, canonical, TOKEN_TYPE_CACHE)
            elif instrument == _SYSTEM:
                self._add_sums(self._system_tokens, system_sums, canonical, TOKEN_TYPE_SYSTEM)
            else:
                counter, sums = {
                    _INPUT: (self._input_tokens, input_sums),
                    _OUTPUT: (self._output_tokens, output_sums),
                    _TOTAL: (self._total_tokens, total_sums),
                    _REQUESTS: (self._request_count, request_counts),
                    _ERRORS: (self._request_errors, error_counts),
                }[instrument]
                self._add_sums(counter, sums, canonical, None)
        return count

    @staticmethod
    def _add_sums(
        counter: Counter,
        sums: dict[_AttrKey, int],
        canonical: dict[_AttrKey, _Attributes],
        token_type: str | None,
    ) -> None:
        add = counter.add
        if token_type is None:
            for key, value in sums.items():
                add(value, canonical[key])
        else:
            for key, value in sums.items():
                add(value, _with_token_type(canonical[key], token_type))
