"""consumer.usage.tracker: the contract of the Go TokenTracker, and record_batch equivalence.

Every test records through a real SDK MeterProvider (exemplars off, as in production) and reads
the result back with an InMemoryMetricReader or through the Prometheus exporter.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import NoOpMeter
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.metrics.view import View
from prometheus_client import CollectorRegistry, generate_latest

from consumer.devtools.produce import synthetic_events
from consumer.usage import tracker as tracker_module
from consumer.usage._otel_fastpath import VERIFIED_SDK_VERSIONS
from consumer.usage.provider import build_meter_provider
from consumer.usage.record import to_options
from consumer.usage.tracker import (
    DURATION_BUCKETS_MS,
    MAX_ERROR_CODE_BYTES,
    TokenTracker,
    UsageOptions,
    truncate_utf8,
)
from schemas import UsageEventV1

# The contract, written out independently of the module's constants.
COUNTERS = {
    "llm.token.usage.input": ("{token}", "LLM input/prompt token usage"),
    "llm.token.usage.output": ("{token}", "LLM output/completion token usage"),
    "llm.token.total": ("{token}", "Total LLM tokens consumed (input + output)"),
    "llm.token.cache.input": ("{token}", "LLM cache-related input token usage"),
    "llm.token.system": ("{token}", "LLM tokens consumed by system operations"),
    "llm.request.count": ("{request}", "Number of LLM requests"),
    "llm.request.errors": ("{error}", "Number of LLM request errors"),
}
HISTOGRAM = ("llm.request.duration", "ms", "LLM request duration in milliseconds")
ALL_NAMES = [*COUNTERS, HISTOGRAM[0]]

BASE_ATTRS: dict[str, Any] = {
    "llm.provider": "openai",
    "llm.provider.uuid": "p-1",
    "llm.model": "gpt-4o",
    "llm.request.model": "gpt-4",
    "llm.scenario": "openai",
    "llm.streaming": False,
    "llm.response.status": "success",
}


def opts(**overrides: Any) -> UsageOptions:
    base: dict[str, Any] = {
        "provider": "openai",
        "provider_uuid": "p-1",
        "model": "gpt-4o",
        "request_model": "gpt-4",
        "scenario": "openai",
        "status": "success",
    }
    base.update(overrides)
    return UsageOptions(**base)


class Harness:
    """A fresh MeterProvider + InMemoryMetricReader + TokenTracker."""

    def __init__(self, views: Sequence[View] = ()) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(
            metric_readers=[self.reader],
            exemplar_filter=AlwaysOffExemplarFilter(),
            views=views,
            shutdown_on_exit=False,
        )
        self.tracker = TokenTracker(self.provider.get_meter("test-tracker"))

    def metrics(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        if data is None:
            return {}
        found: dict[str, Metric] = {}
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    assert metric.name not in found
                    found[metric.name] = metric
        return found

    def points(self, name: str) -> list[Any]:
        metric = self.metrics().get(name)
        return [] if metric is None else list(metric.data.data_points)

    def sum_points(self, name: str) -> list[tuple[dict[str, Any], int]]:
        result = []
        for point in self.points(name):
            assert isinstance(point, NumberDataPoint)
            assert type(point.value) is int
            result.append((dict(point.attributes or {}), point.value))
        return result

    def snapshot(self) -> list[tuple[Any, ...]]:
        """Everything the reader exports except timestamps, in export order."""
        rows: list[tuple[Any, ...]] = []
        for name, metric in self.metrics().items():
            rows.append(("metric", name, metric.unit, metric.description, type(metric.data)))
            for point in metric.data.data_points:
                attrs = list((point.attributes or {}).items())
                if isinstance(point, HistogramDataPoint):
                    rows.append(
                        (
                            name,
                            attrs,
                            point.count,
                            point.sum,
                            point.min,
                            point.max,
                            list(point.bucket_counts),
                            list(point.explicit_bounds),
                        )
                    )
                else:
                    assert isinstance(point, NumberDataPoint)
                    rows.append((name, attrs, type(point.value), point.value))
        return rows

    def close(self) -> None:
        self.provider.shutdown()


@contextmanager
def harness(views: Sequence[View] = ()) -> Iterator[Harness]:
    h = Harness(views)
    try:
        yield h
    finally:
        h.close()


# --- instruments ---------------------------------------------------------------------------------


def test_instruments_names_units_descriptions_and_kinds() -> None:
    with harness() as h:
        h.tracker.record_usage(
            opts(
                input_tokens=1,
                output_tokens=1,
                cache_input_tokens=1,
                system_tokens=1,
                status="error",
                latency_ms=1,
            )
        )
        metrics = h.metrics()
    assert sorted(metrics) == sorted(ALL_NAMES)
    for name, (unit, description) in COUNTERS.items():
        metric = metrics[name]
        assert (metric.unit, metric.description) == (unit, description)
        assert isinstance(metric.data, Sum)
        assert metric.data.is_monotonic is True
        assert metric.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
        (point,) = metric.data.data_points
        assert type(point.value) is int
    name, unit, description = HISTOGRAM
    metric = metrics[name]
    assert (metric.unit, metric.description) == (unit, description)
    assert isinstance(metric.data, HistogramData)
    (histogram_point,) = metric.data.data_points
    assert isinstance(histogram_point, HistogramDataPoint)
    assert tuple(histogram_point.explicit_bounds) == DURATION_BUCKETS_MS


def test_module_constants() -> None:
    assert tracker_module.METRIC_INPUT_TOKENS == "llm.token.usage.input"
    assert tracker_module.METRIC_OUTPUT_TOKENS == "llm.token.usage.output"
    assert tracker_module.METRIC_TOTAL_TOKENS == "llm.token.total"
    assert tracker_module.METRIC_CACHE_INPUT_TOKENS == "llm.token.cache.input"
    assert tracker_module.METRIC_SYSTEM_TOKENS == "llm.token.system"
    assert tracker_module.METRIC_REQUEST_COUNT == "llm.request.count"
    assert tracker_module.METRIC_REQUEST_DURATION == "llm.request.duration"
    assert tracker_module.METRIC_REQUEST_ERRORS == "llm.request.errors"
    assert MAX_ERROR_CODE_BYTES == 64


def test_duration_buckets_are_sorted_floats_covering_ten_minutes() -> None:
    assert all(type(b) is float for b in DURATION_BUCKETS_MS)
    assert list(DURATION_BUCKETS_MS) == sorted(set(DURATION_BUCKETS_MS))
    assert DURATION_BUCKETS_MS[0] <= 50.0
    assert DURATION_BUCKETS_MS[-1] >= 600_000.0
    assert len(DURATION_BUCKETS_MS) <= 20  # every bucket is a series per attribute set


def test_usage_options_shape() -> None:
    fields = dataclasses.fields(UsageOptions)
    assert [(f.name, f.type, f.default) for f in fields] == [
        ("provider", "str", ""),
        ("provider_uuid", "str", ""),
        ("model", "str", ""),
        ("request_model", "str", ""),
        ("rule_uuid", "str", ""),
        ("scenario", "str", ""),
        ("input_tokens", "int", 0),
        ("output_tokens", "int", 0),
        ("cache_input_tokens", "int", 0),
        ("cache_read_tokens", "int", 0),
        ("cache_write_tokens", "int", 0),
        ("system_tokens", "int", 0),
        ("streamed", "bool", False),
        ("status", "str", ""),
        ("error_code", "str", ""),
        ("latency_ms", "int", 0),
        ("user_tier", "str", ""),
        ("operation", "str", ""),
    ]


@pytest.mark.parametrize(
    ("given", "value"),
    [({"cache_read_tokens": 7}, 7), ({"cache_input_tokens": 7}, 7), ({}, 0)],
)
def test_usage_options_hold_the_cache_reads_under_both_names(
    given: dict[str, int], value: int
) -> None:
    opts = UsageOptions(**given)
    assert (opts.cache_read_tokens, opts.cache_input_tokens) == (value, value)


def test_usage_options_refuse_two_different_cache_reads() -> None:
    with pytest.raises(ValueError, match=r"cache_read_tokens \(7\) and cache_input_tokens \(6\)"):
        UsageOptions(cache_read_tokens=7, cache_input_tokens=6)
    o = UsageOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.provider = "x"  # type: ignore[misc]
    assert not hasattr(o, "__dict__")  # slotted
    with pytest.raises(TypeError):
        UsageOptions("openai")  # type: ignore[call-arg]  # keyword-only


def test_tracker_module_imports_only_the_api() -> None:
    tree = ast.parse(Path(tracker_module.__file__).read_text(encoding="utf-8"))
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imported.append(node.module or "")
    # SDK internals are confined to consumer._otel_fastpath, used only where verified.
    assert not [m for m in imported if m.startswith("opentelemetry.sdk")]
    assert "opentelemetry.metrics" in imported


def test_works_with_the_api_noop_meter() -> None:
    t = TokenTracker(NoOpMeter("noop"))
    t.record_usage(opts(input_tokens=1, latency_ms=5, status="error"))
    assert t.record_batch([opts(), opts()]) == 2


# --- recording rules -----------------------------------------------------------------------------


def test_full_request_records_every_instrument() -> None:
    with harness() as h:
        h.tracker.record_usage(
            opts(
                input_tokens=100,
                output_tokens=50,
                cache_input_tokens=30,
                system_tokens=7,
                streamed=True,
                status="success",
                latency_ms=1234,
            )
        )
        attrs = {**BASE_ATTRS, "llm.streaming": True}
        assert h.sum_points("llm.token.usage.input") == [(attrs, 100)]
        assert h.sum_points("llm.token.usage.output") == [(attrs, 50)]
        assert h.sum_points("llm.token.total") == [(attrs, 150)]  # no cache, no system
        assert h.sum_points("llm.token.cache.input") == [({**attrs, "llm.token_type": "cache"}, 30)]
        assert h.sum_points("llm.token.system") == [({**attrs, "llm.token_type": "system"}, 7)]
        assert h.sum_points("llm.request.count") == [(attrs, 1)]
        assert h.sum_points("llm.request.errors") == []
        (point,) = h.points("llm.request.duration")
        assert dict(point.attributes) == attrs
        assert (point.count, point.sum, point.min, point.max) == (1, 1234.0, 1234.0, 1234.0)
        assert type(point.sum) is float
        expected = [0] * (len(DURATION_BUCKETS_MS) + 1)
        expected[DURATION_BUCKETS_MS.index(2500.0)] = 1
        assert list(point.bucket_counts) == expected


def test_zero_values_create_no_series() -> None:
    with harness() as h:
        h.tracker.record_usage(opts())
        metrics = h.metrics()
        assert sorted(metrics) == ["llm.request.count"]
        assert h.sum_points("llm.request.count") == [(BASE_ATTRS, 1)]


def test_negative_values_are_not_added() -> None:
    with harness() as h:
        h.tracker.record_usage(
            opts(input_tokens=-5, output_tokens=8, cache_input_tokens=-1, system_tokens=-2)
        )
        assert h.sum_points("llm.token.usage.input") == []
        assert h.sum_points("llm.token.usage.output") == [(BASE_ATTRS, 8)]
        # The rule is literally "input + output > 0 adds input + output".
        assert h.sum_points("llm.token.total") == [(BASE_ATTRS, 3)]
        assert h.sum_points("llm.token.cache.input") == []
        assert h.sum_points("llm.token.system") == []
        h.tracker.record_usage(opts(input_tokens=-5, output_tokens=5))
        assert h.sum_points("llm.token.total") == [(BASE_ATTRS, 3)]


@pytest.mark.parametrize(
    ("input_tokens", "output_tokens", "names"),
    [
        (10, 0, {"llm.token.usage.input", "llm.token.total"}),
        (0, 10, {"llm.token.usage.output", "llm.token.total"}),
        (0, 0, set()),
    ],
)
def test_token_counters_only_when_positive(
    input_tokens: int, output_tokens: int, names: set[str]
) -> None:
    with harness() as h:
        h.tracker.record_usage(opts(input_tokens=input_tokens, output_tokens=output_tokens))
        assert set(h.metrics()) == names | {"llm.request.count"}
        if names:
            assert h.sum_points("llm.token.total") == [(BASE_ATTRS, 10)]


def test_total_excludes_cache_and_system_tokens() -> None:
    with harness() as h:
        h.tracker.record_usage(opts(cache_input_tokens=40, system_tokens=3))
        assert h.sum_points("llm.token.total") == []
        h.tracker.record_usage(opts(input_tokens=1, cache_input_tokens=40, system_tokens=3))
        assert h.sum_points("llm.token.total") == [(BASE_ATTRS, 1)]
        assert h.sum_points("llm.token.cache.input") == [
            ({**BASE_ATTRS, "llm.token_type": "cache"}, 80)
        ]
        assert h.sum_points("llm.token.system") == [({**BASE_ATTRS, "llm.token_type": "system"}, 6)]


def test_token_type_only_on_cache_and_system_counters() -> None:
    with harness() as h:
        h.tracker.record_usage(
            opts(
                input_tokens=1,
                output_tokens=1,
                cache_input_tokens=1,
                system_tokens=1,
                status="error",
                latency_ms=1,
            )
        )
        for name in ALL_NAMES:
            (point,) = h.points(name)
            token_type = dict(point.attributes).get("llm.token_type")
            expected = {"llm.token.cache.input": "cache", "llm.token.system": "system"}.get(name)
            assert token_type == expected, name


def test_conditional_attributes_absent_when_empty() -> None:
    with harness() as h:
        h.tracker.record_usage(
            opts(
                provider="",
                provider_uuid="",
                model="",
                request_model="",
                scenario="",
                status="",
                input_tokens=1,
                latency_ms=9,
            )
        )
        empty = {
            "llm.provider": "",
            "llm.provider.uuid": "",
            "llm.model": "",
            "llm.request.model": "",
            "llm.scenario": "",
            "llm.streaming": False,
            "llm.response.status": "",
        }
        for name in ("llm.token.usage.input", "llm.request.count", "llm.request.duration"):
            (point,) = h.points(name)
            assert dict(point.attributes) == empty, name


def test_conditional_attributes_present_when_set() -> None:
    with harness() as h:
        h.tracker.record_usage(
            opts(rule_uuid="rule-9", user_tier="enterprise", status="error", error_code="429")
        )
        expected = {
            **BASE_ATTRS,
            "llm.response.status": "error",
            "llm.rule.uuid": "rule-9",
            "llm.user.tier": "enterprise",
            "llm.error.code": "429",
        }
        assert h.sum_points("llm.request.count") == [(expected, 1)]
        assert h.sum_points("llm.request.errors") == [(expected, 1)]


def test_error_code_kept_for_non_error_status() -> None:
    with harness() as h:
        h.tracker.record_usage(opts(status="canceled", error_code="client_closed"))
        assert h.sum_points("llm.request.count") == [
            (
                {
                    **BASE_ATTRS,
                    "llm.response.status": "canceled",
                    "llm.error.code": "client_closed",
                },
                1,
            )
        ]
        assert h.sum_points("llm.request.errors") == []


@pytest.mark.parametrize("streamed", [True, False])
def test_streaming_is_a_bool(streamed: bool) -> None:
    with harness() as h:
        h.tracker.record_usage(opts(streamed=streamed))
        ((attrs, _),) = h.sum_points("llm.request.count")
        assert attrs["llm.streaming"] is streamed


@pytest.mark.parametrize(
    ("status", "errors"),
    [("error", 1), ("success", 0), ("canceled", 0), ("", 0), ("Error", 0), ("errors", 0)],
)
def test_errors_only_for_status_error(status: str, errors: int) -> None:
    with harness() as h:
        h.tracker.record_usage(opts(status=status, error_code="E"))
        points = h.sum_points("llm.request.errors")
        assert [v for _, v in points] == ([1] if errors else [])
        assert [v for _, v in h.sum_points("llm.request.count")] == [1]


def test_latency_zero_records_nothing_and_latency_is_never_an_attribute() -> None:
    with harness() as h:
        h.tracker.record_usage(opts(latency_ms=0))
        h.tracker.record_usage(opts(latency_ms=-3))
        assert h.points("llm.request.duration") == []
        h.tracker.record_usage(opts(latency_ms=17))
        h.tracker.record_usage(opts(latency_ms=650_000))
        (point,) = h.points("llm.request.duration")
        assert (point.count, point.sum, point.min, point.max) == (2, 650_017.0, 17.0, 650_000.0)
        assert point.bucket_counts[0] == 1
        assert point.bucket_counts[-1] == 1  # beyond 10 minutes: +Inf
        # Four requests with different latencies: one series everywhere.
        assert h.sum_points("llm.request.count") == [(BASE_ATTRS, 4)]
        for metric in h.metrics().values():
            for p in metric.data.data_points:
                assert not any("latency" in k or "duration" in k for k in p.attributes or {})


def test_bucket_boundaries_are_inclusive_upper_bounds() -> None:
    with harness() as h:
        for bound in DURATION_BUCKETS_MS:
            h.tracker.record_usage(opts(latency_ms=int(bound)))
        (point,) = h.points("llm.request.duration")
        assert list(point.bucket_counts) == [1] * len(DURATION_BUCKETS_MS) + [0]


# --- error-code truncation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("", ""),
        ("rate_limited", "rate_limited"),
        ("a" * 64, "a" * 64),
        ("a" * 65, "a" * 64),
        ("a" * 63 + "é", "a" * 63),  # é is 2 bytes: it would straddle byte 64
        ("a" * 62 + "é", "a" * 62 + "é"),  # exactly 64 bytes
        ("a" * 62 + "éz", "a" * 62 + "é"),
        ("a" * 61 + "€", "a" * 61 + "€"),  # 3-byte char ending at 64
        ("a" * 62 + "€", "a" * 62),
        ("a" * 63 + "😀", "a" * 63),  # 4-byte char
        ("a" * 60 + "😀", "a" * 60 + "😀"),
        ("😀" * 17, "😀" * 16),
        ("é" * 40, "é" * 32),
        ("a" + "€" * 30, "a" + "€" * 21),
    ],
)
def test_error_code_truncation(code: str, expected: str) -> None:
    assert truncate_utf8(code, MAX_ERROR_CODE_BYTES) == expected
    with harness() as h:
        h.tracker.record_usage(opts(status="error", error_code=code))
        ((attrs, _),) = h.sum_points("llm.request.errors")
        assert attrs.get("llm.error.code") == (expected or None)
        assert len(attrs.get("llm.error.code", "").encode()) <= 64


def test_truncated_error_codes_share_one_series() -> None:
    with harness() as h:
        codes = ["x" * 64, "x" * 64 + "tail-1", "x" * 64 + "tail-2"]
        h.tracker.record_batch(opts(status="error", error_code=c) for c in codes)
        h.tracker.record_usage(opts(status="error", error_code="x" * 70))
        ((attrs, value),) = h.sum_points("llm.request.errors")
        assert (attrs["llm.error.code"], value) == ("x" * 64, 4)


def test_truncate_utf8_edge_cases() -> None:
    assert truncate_utf8("é", 1) == ""
    assert truncate_utf8("abc", 0) == ""
    assert truncate_utf8("\ud800abc", 3) == "\ud800"  # lone surrogate does not crash
    with pytest.raises(ValueError, match="max_bytes"):
        truncate_utf8("abc", -1)


@given(st.text(max_size=40), st.integers(0, 100))
def test_truncate_utf8_property(s: str, max_bytes: int) -> None:
    out = truncate_utf8(s, max_bytes)
    out_bytes = out.encode("utf-8", "surrogatepass")
    assert s.startswith(out)
    assert len(out_bytes) <= max_bytes
    # Maximal: the next character would not fit.
    if out != s:
        next_char = s[len(out)].encode("utf-8", "surrogatepass")
        assert len(out_bytes) + len(next_char) > max_bytes


# --- record_batch --------------------------------------------------------------------------------


def test_record_batch_returns_count_and_accepts_generators() -> None:
    with harness() as h:
        assert h.tracker.record_batch([]) == 0
        assert h.metrics() == {}
        assert h.tracker.record_batch(opts(input_tokens=i) for i in range(5)) == 5
        assert h.sum_points("llm.token.usage.input") == [(BASE_ATTRS, 10)]
        assert h.sum_points("llm.request.count") == [(BASE_ATTRS, 5)]


def test_record_batch_records_nothing_if_the_iterable_fails() -> None:
    def events() -> Iterator[UsageOptions]:
        yield opts(input_tokens=3, latency_ms=10)
        raise RuntimeError("decode failed")

    with harness() as h:
        with pytest.raises(RuntimeError, match="decode failed"):
            h.tracker.record_batch(events())
        assert h.metrics() == {}


def test_record_batch_adds_once_per_attribute_set_and_reuses_attribute_dicts() -> None:
    calls: list[tuple[str, float, dict[str, Any]]] = []

    class Spy:
        def __init__(self, name: str) -> None:
            self.name = name

        def add(self, value: float, attributes: dict[str, Any]) -> None:
            calls.append((self.name, value, attributes))

        def record(self, value: float, attributes: dict[str, Any]) -> None:
            calls.append((self.name, value, attributes))

    class SpyMeter(NoOpMeter):
        def create_counter(self, name: str, unit: str = "", description: str = "") -> Any:
            return Spy(name)

        def create_histogram(self, name: str, *args: Any, **kwargs: Any) -> Any:
            return Spy(name)

    t = TokenTracker(SpyMeter("spy"))
    events = [opts(input_tokens=2, latency_ms=5, provider=p) for p in "abab"] + [opts(provider="c")]
    assert t.record_batch(events) == 5
    # Instruments first used in the order record_usage first uses them; per instrument, one add
    # per attribute set in first-seen order; the histogram once per event with a latency. (A
    # spy meter is not the SDK, so no aggregation resolves: every call stays public.)
    first_used = list(dict.fromkeys(n for n, _, _ in calls))
    assert first_used == [
        "llm.token.usage.input",
        "llm.token.total",
        "llm.request.count",
        "llm.request.duration",
    ]
    per_instrument = {
        name: [(a["llm.provider"], v) for n, v, a in calls if n == name] for name in first_used
    }
    assert per_instrument == {
        "llm.token.usage.input": [("a", 4), ("b", 4)],
        "llm.token.total": [("a", 4), ("b", 4)],
        "llm.request.count": [("a", 2), ("b", 2), ("c", 1)],
        "llm.request.duration": [("a", 5.0), ("a", 5.0), ("b", 5.0), ("b", 5.0)],
    }
    assert all(type(v) is float for n, v, _ in calls if n == "llm.request.duration")
    by_provider: dict[str, set[int]] = {}
    for _, _, attrs in calls:
        by_provider.setdefault(attrs["llm.provider"], set()).add(id(attrs))
    assert {p: len(ids) for p, ids in by_provider.items()} == {"a": 1, "b": 1, "c": 1}


# Small alphabets so attribute sets repeat; zeros, negatives, every status, long and multi-byte
# error codes (several truncate to the same 64 bytes), latencies 0..10^6 incl. exact bounds.
ERROR_CODES = [
    "",
    "429",
    "timeout",
    "x" * 64,
    "x" * 64 + "-a",
    "x" * 100,
    "x" * 63 + "é",
    "x" * 63 + "😀",
    "😀" * 20,
    "é" * 33,
]
tokens = st.one_of(st.just(0), st.integers(-2, 3), st.integers(0, 100_000))
latencies = st.one_of(
    st.just(0),
    st.integers(-1, 10**6),
    st.sampled_from([int(b) for b in DURATION_BUCKETS_MS] + [1, 600_001]),
)
usage_options = st.builds(
    UsageOptions,
    provider=st.sampled_from(["openai", "anthropic", ""]),
    provider_uuid=st.sampled_from(["p-1", "p-2", ""]),
    model=st.sampled_from(["gpt-4o", "claude", ""]),
    request_model=st.sampled_from(["gpt-4", ""]),
    rule_uuid=st.sampled_from(["", "rule-1"]),
    scenario=st.sampled_from(["openai", "claude_code", ""]),
    input_tokens=tokens,
    output_tokens=tokens,
    cache_input_tokens=tokens,
    system_tokens=tokens,
    streamed=st.booleans(),
    status=st.sampled_from(["success", "error", "canceled", ""]),
    error_code=st.one_of(st.sampled_from(ERROR_CODES), st.text(max_size=70)),
    latency_ms=latencies,
    user_tier=st.sampled_from(["", "free", "enterprise"]),
)
batches = st.lists(st.lists(usage_options, max_size=40), max_size=4)


def assert_batch_equals_per_event(
    event_batches: list[list[UsageOptions]], views: Sequence[View] = ()
) -> list[tuple[Any, ...]]:
    with harness(views) as per_event, harness(views) as batched:
        expected = per_event.snapshot()
        for batch in event_batches:
            for event in batch:
                per_event.tracker.record_usage(event)
            assert batched.tracker.record_batch(iter(batch)) == len(batch)
            # Cumulative state must match after every batch, not just at the end.
            expected = per_event.snapshot()
            assert batched.snapshot() == expected
        return expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
def test_record_batch_equals_record_usage(event_batches: list[list[UsageOptions]]) -> None:
    snapshot = assert_batch_equals_per_event(event_batches)
    for row in snapshot:
        if row[0] == "llm.request.duration":
            assert row[7] == list(DURATION_BUCKETS_MS)


def cardinality_views(limit: int) -> list[View]:
    return [View(instrument_name=name, aggregation_cardinality_limit=limit) for name in ALL_NAMES]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches, st.integers(1, 4))
def test_record_batch_equals_record_usage_under_cardinality_limit(
    event_batches: list[list[UsageOptions]], limit: int
) -> None:
    snapshot = assert_batch_equals_per_event(event_batches, cardinality_views(limit))
    per_metric: dict[str, list[dict[str, Any]]] = {}
    for row in snapshot:
        if row[0] != "metric":
            per_metric.setdefault(row[0], []).append(dict(row[1]))
    for points in per_metric.values():
        # At most `limit` real series plus the overflow series, which comes last.
        assert len(points) <= limit + 1
        overflowed = [p for p in points if "otel.metric.overflow" in p]
        assert overflowed in ([], [{"otel.metric.overflow": True}])
        if overflowed:
            assert len(points) == limit + 1
            assert points[-1] == {"otel.metric.overflow": True}


def test_cardinality_limit_same_winners_and_same_overflow() -> None:
    # Five attribute sets, limit 2. For llm.token.usage.input the first sets to *add* are "c"
    # and "d" (a and b have no input tokens), while request.count sees a and b first. A batch
    # path that ordered by a shared first-seen order, or added zeros, would pick other winners.
    events = [
        opts(provider="a"),
        opts(provider="b", latency_ms=10),
        opts(provider="c", input_tokens=5),
        opts(provider="d", input_tokens=7, latency_ms=20),
        opts(provider="e", input_tokens=11, latency_ms=30),
        opts(provider="a", input_tokens=13, latency_ms=40),
        opts(provider="c", input_tokens=1),
    ]
    snapshot = assert_batch_equals_per_event([events[:3], events[3:]], cardinality_views(2))
    with harness(cardinality_views(2)) as h:
        h.tracker.record_batch(events)
        overflow = {"otel.metric.overflow": True}
        assert [
            (a.get("llm.provider", a), v) for a, v in h.sum_points("llm.token.usage.input")
        ] == [
            ("c", 6),
            ("d", 7),
            (overflow, 24),
        ]
        assert [(a.get("llm.provider", a), v) for a, v in h.sum_points("llm.request.count")] == [
            ("a", 2),
            ("b", 1),
            (overflow, 4),
        ]
        histogram = [
            (dict(p.attributes).get("llm.provider", dict(p.attributes)), p.count, p.sum)
            for p in h.points("llm.request.duration")
        ]
        assert histogram == [("b", 1, 10.0), ("d", 1, 20.0), (overflow, 2, 70.0)]
    assert snapshot


# --- Prometheus exposition -----------------------------------------------------------------------


def scrape(events: list[UsageOptions], *, batch: bool) -> str:
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(disable_target_info=True, registry=registry)
    provider = MeterProvider(
        metric_readers=[reader],
        exemplar_filter=AlwaysOffExemplarFilter(),
        shutdown_on_exit=False,
    )
    try:
        t = TokenTracker(provider.get_meter("test-tracker"))
        if batch:
            t.record_batch(events)
        else:
            for event in events:
                t.record_usage(event)
        return generate_latest(registry).decode()
    finally:
        provider.shutdown()


def test_prometheus_exposition_names_help_and_buckets() -> None:
    events = [
        opts(
            input_tokens=3,
            output_tokens=4,
            cache_input_tokens=2,
            system_tokens=1,
            streamed=True,
            status="error",
            error_code="E",
            rule_uuid="r",
            user_tier="gold",
            latency_ms=700,
        ),
        opts(input_tokens=1, latency_ms=700_000),
    ]
    text = scrape(events, batch=False)
    expected_help = {
        "llm_token_usage_input_total": "LLM input/prompt token usage",
        "llm_token_usage_output_total": "LLM output/completion token usage",
        # prometheus_client does not double the suffix: llm.token.total -> llm_token_total.
        "llm_token_total": "Total LLM tokens consumed (input + output)",
        "llm_token_cache_input_total": "LLM cache-related input token usage",
        "llm_token_system_total": "LLM tokens consumed by system operations",
        "llm_request_count_total": "Number of LLM requests",
        "llm_request_errors_total": "Number of LLM request errors",
        "llm_request_duration_milliseconds": "LLM request duration in milliseconds",
    }
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, flags=re.MULTILINE))
    assert helps == expected_help
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))
    assert types == {
        name: ("histogram" if name.endswith("milliseconds") else "counter")
        for name in expected_help
    }
    sample_names = set(re.findall(r"^([a-z_]+)\{", text, flags=re.MULTILINE))
    assert sample_names == {
        *(n for n in expected_help if not n.endswith("milliseconds")),
        "llm_request_duration_milliseconds_bucket",
        "llm_request_duration_milliseconds_sum",
        "llm_request_duration_milliseconds_count",
    }

    def value(line_prefix: str, *labels: str) -> list[float]:
        found = []
        for line in text.splitlines():
            if line.startswith(line_prefix + "{") and all(label in line for label in labels):
                found.append(float(line.rsplit(" ", 1)[1]))
        return found

    streaming = 'llm_streaming="true"'
    assert value("llm_token_usage_input_total", streaming) == [3.0]
    assert value("llm_token_usage_input_total", 'llm_streaming="false"') == [1.0]
    assert value("llm_token_total", streaming) == [7.0]
    assert value("llm_token_cache_input_total", 'llm_token_type="cache"') == [2.0]
    assert value("llm_token_system_total", 'llm_token_type="system"') == [1.0]
    assert value("llm_request_errors_total", 'llm_error_code="E"', 'llm_user_tier="gold"') == [1.0]
    assert value("llm_request_count_total") == [1.0, 1.0]

    les = re.findall(
        r'^llm_request_duration_milliseconds_bucket\{le="([^"]+)".*llm_streaming="true"',
        text,
        flags=re.MULTILINE,
    )
    assert les == [*(str(b) for b in DURATION_BUCKETS_MS), "+Inf"]
    assert [float(le) for le in les[:-1]] == list(DURATION_BUCKETS_MS)
    assert math.isinf(float(les[-1]))
    assert value("llm_request_duration_milliseconds_bucket", 'le="600000.0"') == [1.0, 0.0]
    assert value("llm_request_duration_milliseconds_bucket", 'le="+Inf"') == [1.0, 1.0]
    assert value("llm_request_duration_milliseconds_sum") == [700.0, 700_000.0]
    assert "latency" not in text


def test_prometheus_exposition_identical_for_batch_and_per_event() -> None:
    events = [
        opts(
            provider=p,
            input_tokens=i,
            output_tokens=i % 3,
            cache_input_tokens=i % 2,
            status=s,
            error_code="E" if s == "error" else "",
            latency_ms=i * 997,
        )
        for i, (p, s) in enumerate(
            (p, s) for p in ("a", "b", "c") for s in ("success", "error", "canceled")
        )
    ] * 3
    assert scrape(events, batch=True) == scrape(events, batch=False)


# --- the fast path (consumer._otel_fastpath) ------------------------------------------------------


def test_fast_path_is_verified_for_the_installed_sdk_and_used() -> None:
    assert importlib.metadata.version("opentelemetry-sdk") in VERIFIED_SDK_VERSIONS
    with harness() as h:
        assert h.tracker._batches.fast
        events = [opts(provider=p, input_tokens=3, latency_ms=7) for p in "abcab"]
        h.tracker.record_batch(events)
        state = h.tracker._batches._states[next(iter(h.tracker._batches._states))]
        assert not state.unresolved[0]  # the input counter's aggregation was found
        assert state.aggregations[0] is not None


def _single_sum(reader: InMemoryMetricReader) -> int:
    data = reader.get_metrics_data()
    assert data is not None
    (point,) = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert isinstance(point, NumberDataPoint)
    return int(point.value)


def test_fast_path_stays_off_when_exemplars_are_sampled() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)  # trace-based
    try:
        tracker = TokenTracker(provider.get_meter("exemplars-on"))
        assert not tracker._batches.fast
        tracker.record_batch(
            [opts(provider="a", input_tokens=3), opts(provider="a", input_tokens=4)]
        )
        assert _single_sum(reader) == 7
    finally:
        provider.shutdown()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
def test_remembered_sets_are_bounded_and_the_rest_stays_exact(
    event_batches: list[list[UsageOptions]],
) -> None:
    with harness() as per_event, harness() as batched:
        batched.tracker = TokenTracker(batched.provider.get_meter("bounded"), remembered_sets=3)
        for batch in event_batches:
            for event in batch:
                per_event.tracker.record_usage(event)
            batched.tracker.record_batch(batch)
            assert len(batched.tracker._batches._states) <= 3
            assert batched.snapshot() == per_event.snapshot()


def test_exposition_text_is_identical_with_the_fast_path_over_many_batches() -> None:
    events = [to_options(UsageEventV1.model_validate(e)) for e in synthetic_events(3000, seed=5)]
    texts = []
    for batched in (False, True):
        registry = CollectorRegistry()
        provider = build_meter_provider(registry, cardinality_limit=200)
        tracker = TokenTracker(provider.get_meter("exposition"), remembered_sets=200)
        for start in range(0, len(events), 250):
            chunk = events[start : start + 250]
            if batched:
                tracker.record_batch(chunk)
            else:
                for event in chunk:
                    tracker.record_usage(event)
            generate_latest(registry)  # collects between batches, as scrapes do
        texts.append(generate_latest(registry))
        provider.shutdown()
    assert b'otel_metric_overflow="true"' in texts[0]  # the limit was reached on the way
    assert texts[0] == texts[1]
