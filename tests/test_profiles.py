"""Metrics profiles: the `genai` profile's rules, exact batching for every profile, the seam.

The `genai` rules are restated from ../shared/reference/genai-semantics.md and checked against
a real SDK. Batching is held to per-event recording the way tests/test_tracker.py holds the
`llm` profile: data points after every batch (with and without cardinality limits), and the
exposition bytes, for `llm`, `genai` and `both`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import event as note_event
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.metrics.view import View
from prometheus_client import CollectorRegistry

from consumer.app import run_worker
from consumer.cli import main
from consumer.errors import ConfigError
from consumer.exposition.text import TextRenderer
from consumer.settings import load_settings
from consumer.usage.expiry import SeriesExpiry
from consumer.usage.genai import DURATION_BUCKETS_S, TOKEN_USAGE_BUCKETS, GenAiTracker
from consumer.usage.options import UsageOptions
from consumer.usage.profiles import COMBINATIONS, PROFILES, build_trackers, describe, members
from consumer.usage.provider import build_meter_provider
from consumer.usage.tracker import TokenTracker

TOKEN_USAGE = "gen_ai.client.token.usage"  # noqa: S105 (a metric name)
DURATION = "gen_ai.client.operation.duration"
OVERFLOW = "otel.metric.overflow"
PROFILE_NAMES = ("llm", "genai", "both")


class Recorded:
    """A fresh MeterProvider + InMemoryMetricReader + the trackers of one profile."""

    def __init__(self, profile: str, views: Sequence[View] = ()) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(
            metric_readers=[self.reader],
            exemplar_filter=AlwaysOffExemplarFilter(),
            views=views,
            shutdown_on_exit=False,
        )
        self.trackers = build_trackers(profile, self.provider.get_meter("test"), 10_000)

    def record_usage(self, batch: list[UsageOptions]) -> None:
        """Per event; with `both`, each profile's tracker over the batch in turn, as the
        worker's recorder hands a batch to one tracker after the other."""
        for tracker in self.trackers:
            for event in batch:
                tracker.record_usage(event)

    def record_batch(self, batch: list[UsageOptions]) -> None:
        for tracker in self.trackers:
            assert tracker.record_batch(iter(batch)) == len(batch)

    def snapshot(self) -> list[tuple[Any, ...]]:
        """Everything the reader exports except timestamps, in export order."""
        data = self.reader.get_metrics_data()
        rows: list[tuple[Any, ...]] = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    rows.append(("metric", metric.name, metric.unit, metric.description))
                    for p in metric.data.data_points:
                        attrs = list((p.attributes or {}).items())
                        if isinstance(p, HistogramDataPoint):
                            row = (p.count, p.sum, p.min, p.max, list(p.bucket_counts))
                            rows.append((metric.name, attrs, *row, list(p.explicit_bounds)))
                        else:
                            assert isinstance(p, NumberDataPoint)
                            rows.append((metric.name, attrs, type(p.value), p.value))
        return rows

    def points(self, name: str) -> list[HistogramDataPoint]:
        rows = []
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        rows.extend(metric.data.data_points)
        return rows


@contextmanager
def recorded(profile: str, views: Sequence[View] = ()) -> Iterator[Recorded]:
    r = Recorded(profile, views)
    try:
        yield r
    finally:
        r.provider.shutdown()


def opts(**fields: Any) -> UsageOptions:
    base: dict[str, Any] = {
        "provider": "openai",
        "provider_uuid": "p-1",
        "model": "gpt-4o",
        "request_model": "gpt-4",
        "scenario": "chat",
        "status": "success",
    }
    return UsageOptions(**{**base, **fields})


# --- the genai profile's rules -----------------------------------------------------------------


def test_instruments_take_names_units_and_descriptions_from_the_conventions() -> None:
    with recorded("genai") as r:
        r.record_usage([opts(input_tokens=1, latency_ms=5)])
        rows = [row for row in r.snapshot() if row[0] == "metric"]
    assert rows == [
        ("metric", TOKEN_USAGE, "{token}", "Number of input and output tokens used."),
        ("metric", DURATION, "s", "GenAI operation duration."),
    ]


def test_one_token_value_per_token_type_above_zero() -> None:
    with recorded("genai") as r:
        r.record_usage(
            [
                opts(
                    input_tokens=100,
                    output_tokens=20,
                    cache_read_tokens=300,
                    cache_write_tokens=40,
                    system_tokens=0,
                    latency_ms=1500,
                )
            ]
        )
        points = r.points(TOKEN_USAGE)
    by_type = {p.attributes["gen_ai.token.type"]: p for p in points}  # type: ignore[index]
    assert {t: (p.count, p.sum) for t, p in by_type.items()} == {
        "input": (1, 100),
        "output": (1, 20),
        "cache_read": (1, 300),
        "cache_write": (1, 40),
    }
    assert list(by_type["input"].explicit_bounds) == [float(b) for b in TOKEN_USAGE_BUCKETS]
    assert dict(by_type["input"].attributes or {}) == {
        "gen_ai.operation.name": "chat",  # the event had none
        "gen_ai.provider.name": "openai",
        "gen_ai.response.model": "gpt-4o",
        "gen_ai.request.model": "gpt-4",
        "tingly.scenario": "chat",
        "tingly.provider.uuid": "p-1",
        "tingly.streaming": False,
        "gen_ai.token.type": "input",
    }


def test_the_seeds_cache_name_records_as_cache_read() -> None:
    with recorded("genai") as r:
        r.record_usage([opts(cache_input_tokens=64)])
        (point,) = r.points(TOKEN_USAGE)
    assert (point.attributes or {})["gen_ai.token.type"] == "cache_read"
    assert point.sum == 64


def test_duration_is_always_recorded_in_seconds_even_at_zero() -> None:
    with recorded("genai") as r:
        r.record_usage([opts(latency_ms=0)])
        r.record_usage([opts(latency_ms=2500)])
        (point,) = r.points(DURATION)
        assert r.points(TOKEN_USAGE) == []
    assert (point.count, point.sum, point.min, point.max) == (2, 2.5, 0.0, 2.5)
    assert list(point.explicit_bounds) == list(DURATION_BUCKETS_S)


@pytest.mark.parametrize(
    ("status", "code", "error_type"),
    [
        ("error", "rate_limited", "rate_limited"),
        ("error", "", "_OTHER"),
        ("error", "é" * 40, "é" * 32),  # cut to 64 bytes on a character boundary
        ("canceled", "client_gone", None),  # disconnects never count as errors
        ("success", "ignored", None),
    ],
)
def test_error_type_only_on_the_duration_of_errors(
    status: str, code: str, error_type: str | None
) -> None:
    with recorded("genai") as r:
        r.record_usage([opts(status=status, error_code=code, input_tokens=5, latency_ms=10)])
        (duration,) = r.points(DURATION)
        (tokens,) = r.points(TOKEN_USAGE)
    assert (duration.attributes or {}).get("error.type") == error_type
    token_keys = set(tokens.attributes or {})
    assert "error.type" not in token_keys
    assert not {key for key in token_keys if "status" in key}


def test_optional_labels_only_when_non_empty_and_operation_as_sent() -> None:
    with recorded("genai") as r:
        r.record_usage([opts(rule_uuid="r-1", user_tier="gold", operation="embeddings")])
        r.record_usage([opts()])
        points = r.points(DURATION)
    assert [dict(p.attributes or {}) for p in points] == [
        {
            "gen_ai.operation.name": "embeddings",
            "gen_ai.provider.name": "openai",
            "gen_ai.response.model": "gpt-4o",
            "gen_ai.request.model": "gpt-4",
            "tingly.scenario": "chat",
            "tingly.provider.uuid": "p-1",
            "tingly.streaming": False,
            "tingly.rule.uuid": "r-1",
            "tingly.user.tier": "gold",
        },
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.response.model": "gpt-4o",
            "gen_ai.request.model": "gpt-4",
            "tingly.scenario": "chat",
            "tingly.provider.uuid": "p-1",
            "tingly.streaming": False,
        },
    ]


def test_exposition_names_and_labels() -> None:
    registry = CollectorRegistry()
    provider = build_meter_provider(registry, 100)
    (tracker,) = build_trackers("genai", provider.get_meter("t"), 100)
    tracker.record_usage(opts(input_tokens=3, status="error", error_code="E", latency_ms=20))
    text = TextRenderer().render(registry).decode()
    provider.shutdown()
    assert "# TYPE gen_ai_client_token_usage histogram" in text
    assert "# TYPE gen_ai_client_operation_duration_seconds histogram" in text
    common = (
        'gen_ai_operation_name="chat",gen_ai_provider_name="openai",'
        'gen_ai_request_model="gpt-4",gen_ai_response_model="gpt-4o",'
    )
    tingly = 'tingly_provider_uuid="p-1",tingly_scenario="chat",tingly_streaming="false"'
    assert (
        f'gen_ai_client_token_usage_sum{{{common}gen_ai_token_type="input",{tingly}}} 3.0' in text
    )
    assert (
        f'gen_ai_client_operation_duration_seconds_count{{error_type="E",{common}{tingly}}} 1.0'
    ) in text
    assert "llm_" not in text


# --- batching is exact, for every profile --------------------------------------------------------

ERROR_CODES = ["", "429", "x" * 64, "x" * 64 + "-a", "x" * 63 + "é", "😀" * 20]
tokens = st.one_of(st.just(0), st.integers(-2, 3), st.integers(0, 5_000_000))
# Non-integer seconds: float sums depend on the order of addition.
latencies = st.one_of(st.just(0), st.integers(-1, 10**6), st.sampled_from([1, 7, 333, 81_920]))


@st.composite
def usage_options(draw: st.DrawFn) -> UsageOptions:
    cache = draw(tokens)
    names = draw(st.sampled_from(["read", "seed", "both"]))
    return UsageOptions(
        provider=draw(st.sampled_from(["openai", "anthropic", ""])),
        provider_uuid=draw(st.sampled_from(["p-1", ""])),
        model=draw(st.sampled_from(["gpt-4o", "claude", ""])),
        request_model=draw(st.sampled_from(["gpt-4", ""])),
        rule_uuid=draw(st.sampled_from(["", "rule-1"])),
        scenario=draw(st.sampled_from(["openai", ""])),
        input_tokens=draw(tokens),
        output_tokens=draw(tokens),
        cache_read_tokens=cache if names != "seed" else 0,
        cache_input_tokens=cache if names != "read" else 0,
        cache_write_tokens=draw(tokens),
        system_tokens=draw(tokens),
        streamed=draw(st.booleans()),
        status=draw(st.sampled_from(["success", "error", "canceled", ""])),
        error_code=draw(st.sampled_from(ERROR_CODES)),
        latency_ms=draw(latencies),
        user_tier=draw(st.sampled_from(["", "gold"])),
        operation=draw(st.sampled_from(["", "chat", "embeddings"])),
    )


batches = st.lists(st.lists(usage_options(), max_size=40), max_size=4)


def assert_batch_equals_per_event(
    profile: str, event_batches: list[list[UsageOptions]], views: Sequence[View] = ()
) -> None:
    with recorded(profile, views) as per_event, recorded(profile, views) as batched:
        for batch in event_batches:
            per_event.record_usage(batch)
            batched.record_batch(batch)
            # Cumulative state must match after every batch, not just at the end.
            assert batched.snapshot() == per_event.snapshot()


@pytest.mark.parametrize("profile", PROFILE_NAMES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_batches=batches)
def test_record_batch_equals_record_usage(
    profile: str, event_batches: list[list[UsageOptions]]
) -> None:
    assert_batch_equals_per_event(profile, event_batches)


INSTRUMENTS = [
    "llm.token.usage.input",
    "llm.token.usage.output",
    "llm.token.total",
    "llm.token.cache.input",
    "llm.token.system",
    "llm.request.count",
    "llm.request.duration",
    "llm.request.errors",
    TOKEN_USAGE,
    DURATION,
]


@pytest.mark.parametrize("profile", PROFILE_NAMES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_batches=batches, limit=st.integers(1, 4))
def test_record_batch_equals_record_usage_under_a_cardinality_limit(
    profile: str, event_batches: list[list[UsageOptions]], limit: int
) -> None:
    views = [
        View(instrument_name=name, aggregation_cardinality_limit=limit) for name in INSTRUMENTS
    ]
    assert_batch_equals_per_event(profile, event_batches, views)


def test_the_shared_overflow_series_takes_its_values_in_event_order() -> None:
    """Several sets share the overflow series, so a batch must not gather its values per set:
    float sums depend on the order (0.001 + 0.008 + 0.001 != 0.001 + 0.001 + 0.008)."""
    a, b, c = (UsageOptions(provider="p", model=m, latency_ms=1) for m in ("a", "b", "c"))
    events = [a, b, UsageOptions(provider="p", model="b", latency_ms=8), c]
    views = [View(instrument_name=DURATION, aggregation_cardinality_limit=1)]
    with recorded("genai", views) as per_event, recorded("genai", views) as batched:
        per_event.record_usage(events)
        batched.record_batch(events)
        (overflow,) = [p for p in per_event.points(DURATION) if (p.attributes or {}).get(OVERFLOW)]
        # b, b, c in event order; gathered per set it would be b, c, then b's second value.
        assert overflow.sum == 0.001 + 0.008 + 0.001 != 0.001 + 0.001 + 0.008
        assert batched.snapshot() == per_event.snapshot()


# (a batch, then seconds until the sweep after it): idle expiry at TTL 10 s interleaved.
expiring_steps = st.lists(
    st.tuples(st.lists(usage_options(), max_size=30), st.sampled_from([0, 4, 10, 25])),
    max_size=6,
)


@pytest.mark.parametrize("profile", PROFILE_NAMES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=expiring_steps, limit=st.sampled_from([None, 1, 2, 4]))
def test_record_batch_equals_record_usage_with_idle_expiry(
    profile: str, steps: list[tuple[list[UsageOptions], int]], limit: int | None
) -> None:
    """Series expire and come back (with a small limit, sets leave and take overflow slots);
    the fast path forgets what a sweep removed and stays exactly per-event recording."""
    views = [
        View(instrument_name=name, aggregation_cardinality_limit=limit)
        for name in (INSTRUMENTS if limit is not None else ())
    ]
    with recorded(profile, views) as per_event, recorded(profile, views) as batched:
        expiries = [SeriesExpiry(r.provider, 10.0, interval_s=0.0) for r in (per_event, batched)]
        now = 0.0
        removed = 0
        for batch, wait in steps:
            per_event.record_usage(batch)
            batched.record_batch(batch)
            now += wait
            sweeps = [expiry.sweep(now) for expiry in expiries]
            assert sweeps[0].expired == sweeps[1].expired
            removed += sum(sweeps[1].expired.values())
            for tracker in batched.trackers:
                tracker.forget(sweeps[1].stale)
            assert batched.snapshot() == per_event.snapshot()
        target(float(removed))  # steer the search towards runs where series do expire
        note_event("series expired" if removed else "nothing expired")


def exposition(profile: str, event_batches: list[list[UsageOptions]], batched: bool) -> bytes:
    registry = CollectorRegistry()
    provider = build_meter_provider(registry, 3)  # small: overflow series included
    trackers = build_trackers(profile, provider.get_meter("t"), 3)
    for batch in event_batches:
        for tracker in trackers:
            if batched:
                tracker.record_batch(batch)
            else:
                for event in batch:
                    tracker.record_usage(event)
    text = TextRenderer().render(registry)
    provider.shutdown()
    return text


@pytest.mark.parametrize("profile", PROFILE_NAMES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_batches=batches)
def test_exposition_bytes_are_identical_for_batch_and_per_event(
    profile: str, event_batches: list[list[UsageOptions]]
) -> None:
    assert exposition(profile, event_batches, True) == exposition(profile, event_batches, False)


def test_both_exports_both_sets_from_the_same_events() -> None:
    events = [opts(input_tokens=5, latency_ms=100), opts(input_tokens=7, status="error")]
    texts = {p: exposition(p, [events], True).decode() for p in PROFILE_NAMES}
    usage = {
        p: {line for line in text.splitlines() if line.startswith(("llm_", "gen_ai_"))}
        for p, text in texts.items()
    }
    assert usage["both"] == usage["llm"] | usage["genai"]
    assert usage["llm"]
    assert usage["genai"]
    assert not usage["llm"] & usage["genai"]


# --- cardinality per instrument, in every profile ---------------------------------------------


@pytest.mark.parametrize(
    ("profile", "metrics"),
    [
        ("genai", {"gen_ai_client_token_usage", "gen_ai_client_operation_duration_seconds"}),
        (
            "both",
            {
                "gen_ai_client_token_usage",
                "gen_ai_client_operation_duration_seconds",
                "llm_token_usage_input_total",
                "llm_token_usage_output_total",
                "llm_token_total",
                "llm_request_count_total",
                "llm_request_duration_milliseconds",
            },
        ),
    ],
)
def test_every_instrument_overflows_on_its_own_and_says_so(profile: str, metrics: set[str]) -> None:
    """Limit 3: five models make five attribute sets per instrument; the token histogram has
    one series per (set, token type), so it overflows first; each reports its own series."""
    registry = CollectorRegistry()
    provider = build_meter_provider(registry, 3)
    trackers = build_trackers(profile, provider.get_meter("t"), 3)
    batch = [opts(model=f"m{i}", input_tokens=10, output_tokens=1, latency_ms=5) for i in range(5)]
    for tracker in trackers:
        tracker.record_batch(batch)
    series = {
        s.labels["metric"]: s.value
        for family in registry.collect()
        if family.name == "usage_consumer_metric_series"
        for s in family.samples
    }
    overflow = {
        s.labels["metric"]: s.value
        for family in registry.collect()
        if family.name == "usage_consumer_cardinality_overflow"
        for s in family.samples
    }
    provider.shutdown()
    assert set(series) == metrics
    # Every instrument has more attribute sets than the limit: 3 kept + 1 overflow series.
    assert all(series[m] == 4 for m in metrics), series
    assert all(overflow[m] == 1 for m in metrics), overflow


# --- the seam --------------------------------------------------------------------------------


def test_profiles_are_registered_in_one_place() -> None:
    assert set(PROFILES) == {"llm", "genai"}
    assert COMBINATIONS == {"both": ("llm", "genai")}
    assert members("both") == ("llm", "genai")
    provider = MeterProvider(shutdown_on_exit=False)
    trackers = build_trackers("both", provider.get_meter("t"), 10)
    assert [type(t) for t in trackers] == [TokenTracker, GenAiTracker]
    assert describe("genai") == "the OpenTelemetry GenAI client metrics (gen_ai.client.*)"
    with pytest.raises(KeyError, match="unknown metrics profile 'otel': one of llm, genai, both"):
        members("otel")


def test_an_unknown_profile_stops_start_up_naming_the_setting() -> None:
    settings_ = load_settings({"metrics_profile": "llm2", "metrics_port": 0})
    with pytest.raises(ConfigError) as info:
        run_worker(settings_, threading.Event())
    assert str(info.value) == (
        "invalid setting metrics_profile (env USAGE_CONSUMER_METRICS_PROFILE, flag "
        "--metrics-profile): unknown metrics profile 'llm2': one of llm, genai, both"
    )


def test_the_cli_exits_2_on_an_unknown_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--metrics-profile", "nope", "--metrics-port", "0"]) == 2
    err = capsys.readouterr().err
    assert "usage-consumer: invalid setting metrics_profile" in err
    assert "Traceback" not in err
