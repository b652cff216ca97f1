"""The Prometheus text format, byte for byte as prometheus-client writes it, but fast.

prometheus-client's `generate_latest` validates and escapes every label name and value of every
sample on every scrape; with the tracker's ten labels that is most of a scrape's cost (about 45 µs
a line, so seconds for the tens of thousands of lines a busy worker exports). The label sets of a
series do not change between scrapes, so this renderer keeps each rendered label string, keyed by
the sample's labels, and does the rest exactly as `generate_latest` does. tests/test_exposition.py
holds it to byte equality with `generate_latest`.
"""

from __future__ import annotations

from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = ["TextRenderer"]

_PROMETHEUS_TYPE = {
    "info": "gauge",
    "stateset": "gauge",
    "gaugehistogram": "histogram",
    "unknown": "untyped",
}
_NAME_SUFFIX = {"counter": "_total", "info": "_info"}
_OPENMETRICS_ONLY = ("_created", "_gsum", "_gcount")
_ESCAPING = openmetrics.UNDERSCORES


class TextRenderer:
    """Renders a registry in text format 0.0.4; remembers label strings between scrapes."""

    def __init__(self, max_cached: int = 500_000) -> None:
        self._labels: dict[tuple[tuple[str, str], ...], str] = {}
        self._names: dict[str, str] = {}
        self._max_cached = max_cached

    def render(self, registry: Collector) -> bytes:
        if len(self._labels) > self._max_cached:
            self._labels.clear()  # series come and go (revoked partitions); start afresh
        output: list[str] = []
        for metric in registry.collect():
            mtype = metric.type
            mname = self._name(metric.name + _NAME_SUFFIX.get(mtype, ""))
            documentation = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
            output.append(f"# HELP {mname} {documentation}\n")
            output.append(f"# TYPE {mname} {_PROMETHEUS_TYPE.get(mtype, mtype)}\n")
            deferred: dict[str, list[str]] = {}
            for sample in metric.samples:
                line = self._line(sample)
                suffix = sample.name[len(metric.name) :]
                if suffix in _OPENMETRICS_ONLY and sample.name.startswith(metric.name):
                    # OpenMetrics-only samples go last, each as a gauge of its own.
                    deferred.setdefault(suffix, []).append(line)
                else:
                    output.append(line)
            for suffix, lines in sorted(deferred.items()):
                name = self._name(metric.name + suffix)
                output.append(f"# HELP {name} {documentation}\n")
                output.append(f"# TYPE {name} gauge\n")
                output.extend(lines)
        return "".join(output).encode("utf-8")

    def _name(self, name: str) -> str:
        escaped = self._names.get(name)
        if escaped is None:
            escaped = self._names[name] = openmetrics.escape_metric_name(name, _ESCAPING)
        return escaped

    def _line(self, sample: Sample) -> str:
        key = tuple(sample.labels.items())
        labels = self._labels.get(key)
        if labels is None:
            labels = self._labels[key] = self._render_labels(sample.labels)
        timestamp = ""
        if sample.timestamp is not None:
            timestamp = f" {int(float(sample.timestamp) * 1000):d}"
        value = floatToGoString(sample.value)  # type: ignore[no-untyped-call]
        return f"{self._name(sample.name)}{labels} {value}{timestamp}\n"

    @staticmethod
    def _render_labels(labels: dict[str, str]) -> str:
        if not labels:
            return ""
        parts = []
        for name, value in sorted(labels.items()):
            # Label values are escaped with generate_latest's own (private) helper, called as it
            # calls it; tests/test_exposition.py pins the bytes.
            escaped = openmetrics._escape(value, openmetrics.ALLOWUTF8, False)  # type: ignore[arg-type]
            parts.append(f'{openmetrics.escape_label_name(name, _ESCAPING)}="{escaped}"')
        return "{" + ",".join(parts) + "}"
