"""The record stage: valid events into the TokenTracker, through the real OpenTelemetry SDK.

`build_meter_provider` is the one place the SDK is configured: the Prometheus reader on the
registry handed in, the per-metric cardinality limit, and exemplars off (this worker has no spans,
and the trace-based filter costs time on every measurement).
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, Counter, Histogram, MeterProvider
from prometheus_client import CollectorRegistry

from consumer.tracker import TokenTracker, UsageOptions
from schemas import UsageEventV1

__all__ = ["METER_NAME", "Recorder", "build_meter_provider", "to_options"]

METER_NAME = "llm-usage-consumer"


def build_meter_provider(registry: CollectorRegistry, cardinality_limit: int) -> MeterProvider:
    """A MeterProvider whose only reader exposes the usage metrics on `registry`."""
    reader = PrometheusMetricReader(
        disable_target_info=True,
        registry=registry,
        cardinality_limits={Counter: cardinality_limit, Histogram: cardinality_limit},
    )
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

    def record(self, events: Iterable[UsageEventV1]) -> int:
        """One `record_batch` call per batch; returns how many events were recorded."""
        return self._tracker.record_batch(to_options(e) for e in events)
