"""The record stage: valid events into the TokenTracker, through the real OpenTelemetry SDK.

`build_meter_provider` is the one place the SDK is configured: the reader, the per-metric
cardinality limit, and exemplars off (this worker has no spans, and the trace-based filter costs
time on every measurement). The reader (`consumer.export.UsageReader`) is collected by a
`CardinalityCollector` on the registry handed in, which yields the usage families as the
OpenTelemetry Prometheus exporter would, counting series per metric and flagging overflow in
the same scrape (see consumer.cardinality for how the limit counts).
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import CardinalityLimits
from prometheus_client import CollectorRegistry

from consumer.cardinality import CardinalityCollector
from consumer.export import UsageReader
from consumer.tracker import TokenTracker, UsageLike, UsageOptions
from schemas import UsageEventV1

__all__ = ["METER_NAME", "Recorder", "build_meter_provider", "to_options"]

METER_NAME = "llm-usage-consumer"


def build_meter_provider(registry: CollectorRegistry, cardinality_limit: int) -> MeterProvider:
    """A MeterProvider whose only reader exposes the usage metrics on `registry`.

    Every metric keeps its first `cardinality_limit` attribute sets; later sets fold into one
    extra `otel_metric_overflow="true"` series, so an overflowing metric exports
    `cardinality_limit + 1` series. `registry` also gets the series-count, overflow and
    limit gauges of `CardinalityCollector`.
    """
    # The tracker's instrument kinds; a new kind must be added here to be limited.
    limits: CardinalityLimits = {Counter: cardinality_limit, Histogram: cardinality_limit}
    reader = UsageReader(cardinality_limits=limits)
    registry.register(CardinalityCollector(reader, cardinality_limit))
    return MeterProvider(
        metric_readers=[reader],
        exemplar_filter=AlwaysOffExemplarFilter(),
        shutdown_on_exit=False,
    )


def to_options(event: UsageEventV1) -> UsageOptions:
    return UsageOptions(
        provider=event.provider,
        provider_uuid=event.provider_uuid,
        model=event.model,
        request_model=event.request_model,
        rule_uuid=event.rule_uuid,
        scenario=event.scenario,
        input_tokens=event.input_tokens,
        output_tokens=event.output_tokens,
        cache_input_tokens=event.cache_input_tokens,
        system_tokens=event.system_tokens,
        streamed=event.streamed,
        status=event.status,
        error_code=event.error_code,
        latency_ms=event.latency_ms,
        user_tier=event.user_tier,
    )


class Recorder:
    def __init__(self, tracker: TokenTracker) -> None:
        self._tracker = tracker

    def record(self, events: Iterable[UsageLike]) -> int:
        """One `record_batch` call per batch; returns how many events were recorded.

        Events go in as decoded: they carry UsageOptions' fields (see UsageLike), and copying
        each into a UsageOptions would cost more than recording it.
        """
        return self._tracker.record_batch(events)
