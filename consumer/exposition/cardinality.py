"""Cardinality made visible: how many series each usage metric holds, and whether it overflowed.

Every distinct attribute set of a usage metric is a series the OpenTelemetry SDK keeps for the
life of the process, so a flood of distinct model names (or providers, tiers, error codes) would
grow memory without bound. The SDK caps it: `build_meter_provider` sets one cardinality limit for
every instrument class, and attribute sets beyond it are folded into a single series labelled
``otel_metric_overflow="true"``. Totals stay exact (the overflow series carries the rest); only
the per-label detail of late-coming sets is lost. This module makes that loss visible.

How the limit counts (opentelemetry-sdk 1.45.2, checked in
``_ViewInstrumentMatch._get_or_create_aggregation`` and by ``tests/test_cardinality.py``): with
limit ``N`` a metric keeps the first ``N`` distinct attribute sets in arrival order, for the life
of the process, and the overflow series is created *in addition* to them. The overflow series
does not take one of the ``N`` slots, so an overflowing metric exports exactly ``N + 1`` series
(other SDKs, e.g. Java and .NET, reserve one of the ``N`` points for the overflow: do not carry the
arithmetic over). Once a metric has overflowed, its other series carry
``otel_metric_overflow=""``, which Prometheus treats as no label. A series that holds a slot keeps
it, so its value stays exact.

:class:`CardinalityCollector` is the prometheus-client custom collector of the usage metrics:
once per scrape it collects the SDK through a `consumer.exposition.reader.UsageReader`, yields
the usage families (`consumer.exposition.reader.UsageFamily`, named as the OpenTelemetry
Prometheus exporter names them) and counts, in the same pass, the series of each (one series =
one data point, i.e. one label set) and whether one of them is the overflow series. After the
usage families it yields three gauges:

* ``usage_consumer_metric_series{metric}``: series per usage metric, the overflow one included;
* ``usage_consumer_cardinality_overflow{metric}``: 1 when that metric has an overflow series;
* ``usage_consumer_cardinality_limit``: the configured limit ``N``.

``metric`` is the family's name as on the ``# TYPE`` line of the Prometheus text format, i.e. the
name dashboards query: ``llm_request_count_total`` for a counter,
``llm_request_duration_milliseconds`` for the histogram. Only metrics that have recorded something
appear (the SDK creates a metric's stream on its first measurement). Nothing is re-collected and
no text is parsed: the cost is one dict lookup per data point.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from prometheus_client.core import GaugeMetricFamily, Metric

from consumer.exposition.reader import FamilyBuilder, UsageReader

__all__ = [
    "LIMIT_METRIC",
    "OVERFLOW_LABEL",
    "OVERFLOW_METRIC",
    "SERIES_METRIC",
    "CardinalityCollector",
]

#: The label the exporter derives from the SDK's ``otel.metric.overflow=true`` attribute.
OVERFLOW_LABEL: Final = "otel_metric_overflow"
_OVERFLOW_VALUE: Final = "true"

SERIES_METRIC: Final = "usage_consumer_metric_series"
OVERFLOW_METRIC: Final = "usage_consumer_cardinality_overflow"
LIMIT_METRIC: Final = "usage_consumer_cardinality_limit"

_SERIES_HELP: Final = (
    "Series (label sets) each usage metric exports, its overflow series included; "
    "at most the cardinality limit + 1."
)
_OVERFLOW_HELP: Final = (
    "1 when the usage metric reached the cardinality limit and folds further label sets into "
    'its otel_metric_overflow="true" series (totals stay exact, label detail is lost), else 0.'
)
_LIMIT_HELP: Final = (
    "Label sets kept per usage metric; further sets fold into one extra overflow series."
)

#: The SDK attribute behind OVERFLOW_LABEL.
_OVERFLOW_ATTRIBUTE: Final = "otel.metric.overflow"
# How the text format names a family on its # TYPE line, where that is not the family name.
_EXPOSITION_SUFFIX: Final[dict[str, str]] = {"counter": "_total"}


class CardinalityCollector:
    """Yields the usage families that ``reader`` collects, then their series counts and
    overflow flags. ``limit`` is the cardinality limit configured on the reader, reported as is.
    """

    def __init__(self, reader: UsageReader, limit: int) -> None:
        self._reader = reader
        self._limit = limit
        self._builder = FamilyBuilder()

    def describe(self) -> Iterable[Metric]:
        """Our own families only, so that registering neither runs an SDK collect (a registry
        with ``auto_describe`` would otherwise call :meth:`collect`) nor claims the usage names,
        which are known only once recorded."""
        return self._gauges({}, {})

    def collect(self) -> Iterator[Metric]:
        series: dict[str, int] = {}
        overflow: dict[str, bool] = {}
        for family in self._builder.families(self._reader.read()):
            name = family.name + _EXPOSITION_SUFFIX.get(family.type, "")
            series[name] = len(family.rows)
            overflow[name] = any(
                point.attributes.get(_OVERFLOW_ATTRIBUTE) is True for _, point in family.rows
            )
            yield family
        yield from self._gauges(series, overflow)

    def _gauges(self, series: dict[str, int], overflow: dict[str, bool]) -> list[Metric]:
        series_family = GaugeMetricFamily(SERIES_METRIC, _SERIES_HELP, labels=["metric"])
        overflow_family = GaugeMetricFamily(OVERFLOW_METRIC, _OVERFLOW_HELP, labels=["metric"])
        for name, count in series.items():
            series_family.add_metric([name], count)
            overflow_family.add_metric([name], 1 if overflow[name] else 0)
        limit_family = GaugeMetricFamily(LIMIT_METRIC, _LIMIT_HELP, value=self._limit)
        return [series_family, overflow_family, limit_family]
