"""The export stage: the SDK's data points as Prometheus families, without the per-sample toll.

`opentelemetry-exporter-prometheus` turns every data point into a prometheus-client family row
on every scrape: it sanitizes each attribute key, builds a dict and one `Sample` per line (a
histogram has one per bucket). For a worker holding a few thousand attribute sets that is most
of a scrape (about 0.55 of 0.75 s for 52,000 lines here), and the label sets barely change
between scrapes.

`UsageReader` is a plain SDK `MetricReader` that keeps the collected `MetricsData`.
`FamilyBuilder` turns it into `UsageFamily` objects: prometheus-client families that carry
their data points, named exactly as the exporter names them (its own mapping helpers are
used). They build their `samples` only when something asks (`generate_latest`, the OpenMetrics
encoder, tests), with the exporter's rules; `consumer.exposition.text.TextRenderer` writes them
straight from the data points and caches each point's rendered labels. tests/test_exposition.py
holds both to byte equality with the exporter itself (hypothesis-generated events, one
MeterProvider feeding both readers).

The mapping helpers come from the exporter's private `_mapping` module; pyproject.toml pins the
exporter to the 0.66 line those tests pass on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Any

from opentelemetry.exporter.prometheus._mapping import (
    map_unit,
    sanitize_attribute,
    sanitize_full_name,
)
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    CardinalityLimits,
    MetricReader,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample

__all__ = ["FamilyBuilder", "UsageFamily", "UsageReader", "cumulative_buckets", "type_line_name"]

_INSTRUMENTS: tuple[type, ...] = (
    Counter,
    UpDownCounter,
    Histogram,
    ObservableCounter,
    ObservableUpDownCounter,
    ObservableGauge,
)
_CUMULATIVE: dict[type, AggregationTemporality] = dict.fromkeys(
    _INSTRUMENTS, AggregationTemporality.CUMULATIVE
)


class UsageReader(MetricReader):
    """Collects on demand (once per scrape) and keeps what it collected; cumulative, as
    Prometheus wants."""

    def __init__(self, cardinality_limits: CardinalityLimits | None = None) -> None:
        super().__init__(preferred_temporality=_CUMULATIVE, cardinality_limits=cardinality_limits)
        self._latest: MetricsData | None = None
        self._prepared: tuple[MetricsData | None] | None = None
        self._shut_down = False

    def prepare(self) -> None:
        """Collect now and keep the result for the next `read`: a scrape collects while the
        worker's recording is held back (so the response holds exactly what its offset snapshot
        says) and renders after letting it go."""
        self._prepared = (self._collect_now(),)

    def read(self) -> MetricsData | None:
        """What `prepare` collected, else collect now; None before anything was recorded, or
        once shut down (as the exporter, which then leaves its registry)."""
        if self._prepared is not None:
            (data,), self._prepared = self._prepared, None
            return data
        return self._collect_now()

    def _collect_now(self) -> MetricsData | None:
        if self._shut_down:
            return None
        self._latest = None
        self.collect()
        data, self._latest = self._latest, None
        return data

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        self._latest = metrics_data

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._shut_down = True


class UsageFamily(Metric):
    """One usage metric: its data points, and its samples only when someone reads them.

    `rows` holds, per data point, the label values in `label_keys` order (missing attributes
    backfilled with "", as the exporter does) and the point itself.
    """

    def __init__(
        self,
        prototype: CounterMetricFamily | HistogramMetricFamily,
        label_keys: tuple[str, ...],
        rows: list[tuple[tuple[str, ...], Any]],
    ) -> None:
        # The prototype (no samples) applied prometheus-client's naming: _total, unit suffix.
        self.name = prototype.name
        self.documentation = prototype.documentation
        self.unit = prototype.unit
        self.type = prototype.type
        self.label_keys = label_keys
        self.rows = rows
        self._prototype = prototype
        self._samples: list[Sample] | None = None

    @property
    def samples(self) -> list[Sample]:
        if self._samples is None:
            family = self._prototype
            if isinstance(family, HistogramMetricFamily):
                for values, point in self.rows:
                    family.add_metric(
                        values,
                        cumulative_buckets(point.bucket_counts, point.explicit_bounds),
                        point.sum,
                    )
            else:
                for values, point in self.rows:
                    family.add_metric(values, point.value)
            self._samples = family.samples
        return self._samples

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        self._samples = value


def cumulative_buckets(
    bucket_counts: Sequence[int], explicit_bounds: Sequence[float]
) -> list[tuple[str, int]]:
    """(le, cumulative count) pairs, with le written as the exporter writes it."""
    out = []
    total = 0
    for bound, count in zip(chain(explicit_bounds, ["+Inf"]), bucket_counts, strict=True):
        total += count
        out.append((f"{bound}", total))
    return out


def type_line_name(name: str, unit: str, counter: bool) -> str:
    """How the text format names an SDK metric on its `# TYPE` line (what dashboards query):
    `llm.request.count` is `llm_request_count_total`, `llm.request.duration` (ms)
    `llm_request_duration_milliseconds`."""
    family = (CounterMetricFamily if counter else HistogramMetricFamily)(
        sanitize_full_name(name), "", unit=map_unit(unit)
    )
    return family.name + ("_total" if counter else "")


def label_value(value: Any) -> str:
    """An attribute value as a label value, as the exporter writes it."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


class FamilyBuilder:
    """Builds the exporter's families from `MetricsData` (scope labels, target_info and name
    prefix off, as `build_meter_provider` configures the worker), remembering each attribute
    set's label values between scrapes."""

    def __init__(self, max_cached: int = 200_000) -> None:
        self._label_names: dict[str, str] = {}
        self._rows: dict[tuple[tuple[str, ...], tuple[tuple[str, Any], ...]], tuple[str, ...]] = {}
        self._max_cached = max_cached

    def families(self, data: MetricsData | None) -> Iterator[UsageFamily]:
        if data is None:
            return
        if len(self._rows) > self._max_cached:
            self._rows.clear()  # attribute sets come and go; start afresh
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    yield self._family(metric)

    def _family(self, metric: Any) -> UsageFamily:
        points = metric.data.data_points
        raw_keys: set[str] = set().union(*(p.attributes.keys() for p in points))
        label_keys = tuple(sorted({self._label_name(k) for k in raw_keys}))
        rows = []
        for point in points:
            items = tuple(point.attributes.items())
            values = self._rows.get((label_keys, items))
            if values is None:
                labels = {self._label_name(k): label_value(v) for k, v in items}
                values = tuple(labels.get(k, "") for k in label_keys)
                self._rows[(label_keys, items)] = values
            rows.append((values, point))
        name = sanitize_full_name(metric.name)
        documentation = metric.description or ""
        unit = map_unit(metric.unit or "")
        prototype: CounterMetricFamily | HistogramMetricFamily
        if isinstance(metric.data, HistogramData):
            prototype = HistogramMetricFamily(name, documentation, labels=label_keys, unit=unit)
        elif isinstance(metric.data, Sum) and metric.data.is_monotonic:
            prototype = CounterMetricFamily(name, documentation, labels=label_keys, unit=unit)
        else:  # pragma: no cover - the tracker creates counters and one histogram only
            raise TypeError(f"unsupported usage metric {metric.name}: {type(metric.data)}")
        return UsageFamily(prototype, label_keys, rows)

    def _label_name(self, key: str) -> str:
        name = self._label_names.get(key)
        if name is None:
            name = self._label_names[key] = sanitize_attribute(key)
        return name
