"""Token usage tracking: a Python port of the gateway's Go ``tracker`` package.

:class:`TokenTracker` records one LLM gateway request (:class:`UsageOptions`) as OpenTelemetry
metrics. Every instrument name, kind, unit, description, attribute key and recording rule is the
same as in the original package, so dashboards built for the gateway work unchanged on what this
project exports (the rules are restated in the README, "Metrics exported"). What a request
carries and which attributes it becomes is declared in consumer.usage.options.

Two entry points:

* :meth:`TokenTracker.record_usage` records one request, exactly like the Go ``RecordUsage``.
* :meth:`TokenTracker.record_batch` records many requests and produces exactly the metrics that
  calling ``record_usage`` on each would, with far fewer SDK calls (consumer.usage.batching).

This module depends only on the OpenTelemetry metrics *API*; the SDK, views, readers and the
cardinality limit are configured by whoever builds the ``MeterProvider``
(consumer.usage.provider).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import Final

from opentelemetry.metrics import Counter, Histogram, Meter

from consumer.usage.batching import DEFAULT_REMEMBERED_SETS, BatchRecorder
from consumer.usage.options import (
    ATTR_ERROR_CODE,
    ATTR_MODEL,
    ATTR_PROVIDER,
    ATTR_PROVIDER_UUID,
    ATTR_REQUEST_MODEL,
    ATTR_RESPONSE_STATUS,
    ATTR_RULE_UUID,
    ATTR_SCENARIO,
    ATTR_STREAMING,
    ATTR_TOKEN_TYPE,
    ATTR_USER_TIER,
    LLM_LABELS,
    MAX_ERROR_CODE_BYTES,
    STATUS_CANCELED,
    STATUS_ERROR,
    STATUS_SUCCESS,
    TOKEN_TYPE_CACHE,
    TOKEN_TYPE_SYSTEM,
    UsageLike,
    UsageOptions,
    truncate_utf8,
    with_token_type,
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


class TokenTracker:
    """Records LLM token usage through OpenTelemetry metrics instruments.

    The eight instruments are created once from the meter handed in. ``record_usage`` may be
    called from any thread (all its state lives in the SDK, which locks per aggregation);
    ``record_batch`` keeps a cache of resolved series (consumer.usage.batching) and belongs to
    one thread.
    """

    __slots__ = (
        "_batches",
        "_cache_input_tokens",
        "_input_tokens",
        "_output_tokens",
        "_request_count",
        "_request_duration",
        "_request_errors",
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
        # In record_usage's order of use: consumer.usage.batching numbers them so.
        self._batches = BatchRecorder(
            (
                self._input_tokens,
                self._output_tokens,
                self._total_tokens,
                self._cache_input_tokens,
                self._system_tokens,
                self._request_count,
                self._request_duration,
                self._request_errors,
            ),
            remembered_sets=remembered_sets,
        )

    def record_usage(self, opts: UsageOptions) -> None:
        """Record the token usage of one request (the Go ``RecordUsage``)."""
        attrs = LLM_LABELS.of(opts)
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
                opts.cache_input_tokens, with_token_type(attrs, TOKEN_TYPE_CACHE)
            )
        if opts.system_tokens > 0:
            self._system_tokens.add(opts.system_tokens, with_token_type(attrs, TOKEN_TYPE_SYSTEM))
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
        order of metrics in an export (how: consumer.usage.batching).

        ``opts`` is consumed completely before anything is recorded, so if iterating it raises,
        nothing of that batch reaches the instruments.
        """
        return self._batches.record(opts)

    def forget(self, stale: AbstractSet[object]) -> None:
        """Stop updating these SDK aggregations directly (series an idle expiry removed, see
        consumer.usage.expiry); `record_batch` resolves their sets afresh on next use."""
        self._batches.forget(stale)
