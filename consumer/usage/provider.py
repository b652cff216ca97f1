"""The one place the OpenTelemetry SDK is configured: reader, cardinality limit, exemplars off.

Exemplars are off because this worker has no spans, and the trace-based filter costs time on
every measurement. The reader (consumer.exposition.reader.UsageReader) is collected by a
`CardinalityCollector` on the registry handed in, which yields the usage families as the
OpenTelemetry Prometheus exporter would, counting series per metric and flagging overflow in
the same scrape (see consumer.exposition.cardinality for how the limit counts).
"""

from __future__ import annotations

from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import CardinalityLimits
from prometheus_client import CollectorRegistry

from consumer.exposition.cardinality import CardinalityCollector
from consumer.exposition.reader import UsageReader

__all__ = ["METER_NAME", "build_meter_provider", "build_usage"]

METER_NAME = "llm-usage-consumer"


def build_meter_provider(registry: CollectorRegistry, cardinality_limit: int) -> MeterProvider:
    """`build_usage`'s MeterProvider, for callers that need no handle on the reader."""
    return build_usage(registry, cardinality_limit)[0]


def build_usage(
    registry: CollectorRegistry, cardinality_limit: int
) -> tuple[MeterProvider, UsageReader]:
    """A MeterProvider whose only reader exposes the usage metrics on `registry`.

    Every metric keeps its first `cardinality_limit` attribute sets; later sets fold into one
    extra `otel_metric_overflow="true"` series, so an overflowing metric exports
    `cardinality_limit + 1` series. `registry` also gets the series-count, overflow and
    limit gauges of `CardinalityCollector`. The reader is returned too: the /metrics handler
    prepares its collect (consumer.pipeline.commit.ScrapeAcknowledger).
    """
    # The tracker's instrument kinds; a new kind must be added here to be limited.
    limits: CardinalityLimits = {Counter: cardinality_limit, Histogram: cardinality_limit}
    reader = UsageReader(cardinality_limits=limits)
    registry.register(CardinalityCollector(reader, cardinality_limit))
    provider = MeterProvider(
        metric_readers=[reader],
        exemplar_filter=AlwaysOffExemplarFilter(),
        shutdown_on_exit=False,
    )
    return provider, reader
