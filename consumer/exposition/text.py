"""The Prometheus text format, byte for byte as prometheus-client writes it, but fast.

prometheus-client's `generate_latest` validates and escapes every label name and value of every
sample on every scrape; with the tracker's ten labels that is most of a scrape's cost (about 45 µs a
line, so seconds for the tens of thousands of lines a busy worker exports). The label sets of a
series do not change between scrapes, so this renderer keeps each rendered label string, keyed by
the sample's labels, and does the rest exactly as `generate_latest` does. The usage metrics
(`consumer.exposition.reader.UsageFamily`) it writes straight from their data points, without
building a `Sample` per line. tests/test_exposition.py holds it to byte equality with
`generate_latest`.

`chunks` yields the text in pieces of a few hundred KiB, so a scrape of tens of megabytes is sent as
it is written instead of being held whole in memory three times over (lines, text, bytes).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import accumulate

from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from consumer.exposition.reader import UsageFamily

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
_CHUNK_LINES = 1024  # a usage line is 200-400 characters


class TextRenderer:
    """Renders a registry in text format 0.0.4; remembers label strings between scrapes."""

    def __init__(self, max_cached: int = 500_000) -> None:
        self._labels: dict[object, str] = {}
        self._le_parts: dict[object, tuple[str, str]] = {}
        self._names: dict[str, str] = {}
        self._counts: dict[int, str] = {}  # floatToGoString of the small counts buckets hold
        self._max_cached = max_cached

    def render(self, registry: Collector) -> bytes:
        return b"".join(chunk.encode("utf-8") for chunk in self.chunks(registry))

    def chunks(self, registry: Collector) -> Iterator[str]:
        """The text of one scrape, in pieces of a few hundred KiB."""
        if len(self._labels) + len(self._le_parts) > self._max_cached:
            self._labels.clear()  # series come and go (revoked partitions); start afresh
            self._le_parts.clear()
        output: list[str] = []
        size = 0
        for metric in registry.collect():
            mtype = metric.type
            mname = self._name(metric.name + _NAME_SUFFIX.get(mtype, ""))
            documentation = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
            output.append(f"# HELP {mname} {documentation}\n")
            output.append(f"# TYPE {mname} {_PROMETHEUS_TYPE.get(mtype, mtype)}\n")
            if isinstance(metric, UsageFamily):
                for lines in self._usage_lines(metric):
                    output.extend(lines)
                    size += len(lines)
                    if size >= _CHUNK_LINES:
                        yield "".join(output)
                        output.clear()
                        size = 0
                continue
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
        if output:
            yield "".join(output)

    def _usage_lines(self, family: UsageFamily) -> Iterator[list[str]]:
        """Per data point, its lines: as the exporter's samples would be written, from the
        point itself."""
        keys = family.label_keys
        if family.type == "counter":
            name = self._name(family.name + "_total")
            for values, point in family.rows:
                labels = self._usage_labels(keys, values)
                yield [f"{name}{labels} {floatToGoString(point.value)}\n"]  # type: ignore[no-untyped-call]
            return
        bucket = self._name(family.name + "_bucket")
        count = self._name(family.name + "_count")
        total_name = self._name(family.name + "_sum")
        counts = self._counts
        bounds: Sequence[float] | None = None
        les: list[str] = []
        for values, point in family.rows:
            if point.explicit_bounds is not bounds:  # one list for all points of an instrument
                bounds = point.explicit_bounds
                les = [f"{bound}" for bound in bounds] + ["+Inf"]
            prefix, suffix = self._bucket_parts(keys, values)
            start = bucket + prefix
            texts = [
                counts.get(running) or self._count_text(running)
                for running in accumulate(point.bucket_counts)
            ]
            lines = [f"{start}{le}{suffix} {text}\n" for le, text in zip(les, texts, strict=True)]
            first = bounds[0] if bounds else float("inf")
            if first >= 0:  # prometheus-client drops _count and _sum with negative buckets
                labels = self._usage_labels(keys, values)
                lines.append(f"{count}{labels} {texts[-1]}\n")
                lines.append(f"{total_name}{labels} {floatToGoString(point.sum)}\n")  # type: ignore[no-untyped-call]
            yield lines

    def _count_text(self, count: int) -> str:
        text: str = floatToGoString(count)  # type: ignore[no-untyped-call]
        if count < 100_000:  # bounded: the common counts only
            self._counts[count] = text
        return text

    def _usage_labels(self, keys: tuple[str, ...], values: tuple[str, ...]) -> str:
        cache_key = (keys, values)
        labels = self._labels.get(cache_key)
        if labels is None:
            labels = self._labels[cache_key] = self._render_labels(
                dict(zip(keys, values, strict=True))
            )
        return labels

    def _bucket_parts(self, keys: tuple[str, ...], values: tuple[str, ...]) -> tuple[str, str]:
        """The label string of a bucket line around its le value: `{a="x",le="` and `",b="y"}`."""
        cache_key = (keys, values)
        parts = self._le_parts.get(cache_key)
        if parts is None:
            at = bisect_left(keys, "le")
            before = self._render_labels(dict(zip(keys[:at], values[:at], strict=True)))[1:-1]
            after = self._render_labels(dict(zip(keys[at:], values[at:], strict=True)))[1:-1]
            parts = self._le_parts[cache_key] = (
                "{" + before + ("," if before else "") + 'le="',
                '"' + ("," if after else "") + after + "}",
            )
        return parts

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
