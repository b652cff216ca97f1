"""Idle-series expiry (consumer.usage.expiry) on a real SDK and the worker's exposition.

What goes, when, and what comes back: an idle series leaves the text exposition and a busy one
stays; in scrape commit mode a series waits for a scrape taken after its last update; a set that
returns starts from zero; removed series free cardinality slots (with the SDK's own arithmetic
when the overflow series exists). That batch recording stays exactly per-event recording through
expiry is held by tests/test_profiles.py (`..._with_idle_expiry`); the worker loop's use of it by
tests/test_loop.py, and Prometheus's view of the gaps by tests/test_expiry_e2e.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from consumer import app
from consumer.errors import ConfigError
from consumer.exposition.text import TextRenderer
from consumer.settings import load_settings
from consumer.usage.expiry import MAX_SWEEP_INTERVAL_S, MIN_SWEEP_INTERVAL_S, SeriesExpiry
from consumer.usage.options import UsageOptions
from consumer.usage.profiles import ProfileTracker, build_trackers
from consumer.usage.provider import build_meter_provider

LLM_COUNTERS = (
    "llm_token_usage_input_total",
    "llm_token_total",
    "llm_request_count_total",
)


class Usage:
    """A worker's usage side: registry, MeterProvider, the trackers of one profile."""

    def __init__(self, profile: str = "llm", limit: int = 100) -> None:
        self.registry = CollectorRegistry()
        self.provider = build_meter_provider(self.registry, limit)
        self.trackers: tuple[ProfileTracker, ...] = build_trackers(
            profile, self.provider.get_meter("t"), limit
        )

    def record(self, *events: UsageOptions) -> None:
        for tracker in self.trackers:
            tracker.record_batch(list(events))

    def forget(self, stale: frozenset[object]) -> None:
        for tracker in self.trackers:
            tracker.forget(stale)

    def requests(self) -> dict[str, float]:
        """llm_request_count_total by model, as scraped."""
        return {
            dict(labels)["llm_model"]: value
            for (name, labels), value in self.samples().items()
            if name == "llm_request_count_total"
        }

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in self.registry.collect()
            for s in family.samples
        }

    def series(self, metric: str) -> float | None:
        return self.registry.get_sample_value("usage_consumer_metric_series", {"metric": metric})


@pytest.fixture
def usage() -> Iterator[Usage]:
    u = Usage()
    yield u
    u.provider.shutdown()


def ev(model: str, *, tokens: int = 5, status: str = "success") -> UsageOptions:
    return UsageOptions(provider="openai", model=model, status=status, input_tokens=tokens)


def test_an_idle_series_leaves_the_exposition_and_a_busy_one_stays(usage: Usage) -> None:
    expiry = SeriesExpiry(usage.provider, 10.0, interval_s=0.0)
    usage.record(ev("a"), ev("b"))
    assert expiry.sweep(0.0).expired == {}  # first sight: both start their idle clock
    usage.record(ev("b"))
    assert expiry.sweep(5.0).expired == {}  # b moved: its clock restarts at 5
    assert expiry.sweep(9.9).expired == {}  # a: 9.9 s idle

    sweep = expiry.sweep(10.0)

    assert sweep.expired == dict.fromkeys(LLM_COUNTERS, 1)
    assert len(sweep.stale) == 3
    assert usage.requests() == {"b": 2.0}
    text = TextRenderer().render(usage.registry).decode()
    assert 'llm_model="a"' not in text
    assert 'llm_request_count_total{llm_model="b",llm_provider="openai",' in text
    for metric in LLM_COUNTERS:
        assert usage.series(metric) == 1.0
    # b goes once idle for 10 s since the sweep at 5 that saw it move.
    assert expiry.sweep(14.9).expired == {}
    assert expiry.sweep(15.0).expired == dict.fromkeys(LLM_COUNTERS, 1)
    assert usage.requests() == {}


def test_every_profile_names_what_expired_as_on_the_type_line() -> None:
    usage = Usage("both")
    expiry = SeriesExpiry(usage.provider, 1.0, interval_s=0.0)
    usage.record(
        UsageOptions(
            provider="openai",
            model="m",
            status="error",
            error_code="429",
            input_tokens=3,
            output_tokens=2,
            cache_input_tokens=1,
            system_tokens=1,
            latency_ms=120,
        )
    )
    expiry.sweep(0.0)
    assert expiry.sweep(1.0).expired == {
        "llm_token_usage_input_total": 1,
        "llm_token_usage_output_total": 1,
        "llm_token_total": 1,
        "llm_token_cache_input_total": 1,
        "llm_token_system_total": 1,
        "llm_request_count_total": 1,
        "llm_request_duration_milliseconds": 1,
        "llm_request_errors_total": 1,
        "gen_ai_client_token_usage": 4,  # input, output, cache_read, system
        "gen_ai_client_operation_duration_seconds": 1,
    }
    assert TextRenderer().render(usage.registry).decode().count('model="m"') == 0
    usage.provider.shutdown()


def test_sweeps_run_every_tenth_of_the_ttl_within_bounds(usage: Usage) -> None:
    assert SeriesExpiry(usage.provider, 3600.0).interval_s == MAX_SWEEP_INTERVAL_S == 60.0
    assert SeriesExpiry(usage.provider, 120.0).interval_s == 12.0
    assert SeriesExpiry(usage.provider, 2.0).interval_s == MIN_SWEEP_INTERVAL_S == 0.5
    expiry = SeriesExpiry(usage.provider, 120.0)
    assert expiry.due(0.0)
    expiry.sweep(100.0)
    assert not expiry.due(111.9)
    assert expiry.due(112.0)
    with pytest.raises(ValueError, match="ttl_s must be > 0"):
        SeriesExpiry(usage.provider, 0.0)


def test_in_scrape_mode_a_series_goes_only_after_a_scrape_taken_after_its_last_update(
    usage: Usage,
) -> None:
    expiry = SeriesExpiry(usage.provider, 10.0, interval_s=0.0)
    usage.record(ev("a"))
    expiry.sweep(0.0, covered_at=float("-inf"))
    usage.record(ev("a"))
    expiry.sweep(3.0, covered_at=float("-inf"))  # a moved; seen at 3

    assert expiry.sweep(20.0, covered_at=float("-inf")).expired == {}  # never scraped
    assert expiry.sweep(21.0, covered_at=2.5).expired == {}  # scraped before the last update
    assert expiry.sweep(22.0, covered_at=3.0).expired == {}  # not *after* the sweep that saw it
    assert usage.requests() == {"a": 2.0}
    assert expiry.sweep(23.0, covered_at=3.01).expired == dict.fromkeys(LLM_COUNTERS, 1)
    assert usage.requests() == {}


def test_a_set_that_comes_back_starts_from_zero(usage: Usage) -> None:
    expiry = SeriesExpiry(usage.provider, 10.0, interval_s=0.0)
    usage.record(ev("a", tokens=7), ev("a", tokens=7), ev("a", tokens=7))
    expiry.sweep(0.0)
    usage.forget(expiry.sweep(10.0).stale)
    assert usage.requests() == {}

    usage.record(ev("a", tokens=2))
    usage.record(ev("a", tokens=2))  # the second batch takes the fast path again

    assert usage.requests() == {"a": 2.0}
    input_tokens = {
        dict(labels)["llm_model"]: value
        for (name, labels), value in usage.samples().items()
        if name == "llm_token_usage_input_total"
    }
    assert input_tokens == {"a": 4.0}


def test_expiry_frees_slots_and_a_set_in_the_overflow_series_gets_its_own() -> None:
    usage = Usage(limit=2)
    expiry = SeriesExpiry(usage.provider, 10.0, interval_s=0.0)
    usage.record(ev("a"), ev("b"), ev("c"), ev("c"))  # a, b hold the slots; c overflows
    assert usage.requests() == {"a": 1.0, "b": 1.0, "": 2.0}  # "": the overflow series
    expiry.sweep(0.0)
    usage.record(ev("c"))  # c keeps the overflow series busy
    expiry.sweep(5.0)

    sweep = expiry.sweep(10.0)  # a and b go; the overflow series stays (moved at 5)
    assert sweep.expired == dict.fromkeys(LLM_COUNTERS, 2)
    usage.forget(sweep.stale)  # also the overflow series: c's cached series must re-resolve
    usage.record(ev("c"), ev("d"), ev("e"))

    # One table entry left (the overflow series), limit 2: c takes the free slot; d and e
    # overflow, as per-event recording would have it.
    assert usage.requests() == {"c": 1.0, "": 5.0}
    assert usage.series("llm_request_count_total") == 2.0


def test_with_the_overflow_series_present_one_expiry_frees_no_slot() -> None:
    """The SDK counts the overflow series among the limit's entries once it exists
    (`len(table) >= limit`), so a limit-2 table holding a, b and overflow needs two removals."""
    usage = Usage(limit=2)
    expiry = SeriesExpiry(usage.provider, 10.0, interval_s=0.0)
    usage.record(ev("a"), ev("b"), ev("c"))
    expiry.sweep(0.0)
    usage.record(ev("b"), ev("c"))
    expiry.sweep(5.0)
    usage.forget(expiry.sweep(10.0).stale)  # only a goes
    usage.record(ev("d"))
    assert usage.requests() == {"b": 2.0, "": 3.0}  # table b + overflow: d overflows (c, c, d)


def test_on_an_unverified_sdk_a_ttl_stops_start_up_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app, "expiry_supported", lambda: False)
    settings = load_settings({"series_idle_ttl": "30m", "metrics_port": 0})
    with pytest.raises(ConfigError) as info:
        app.run_worker(settings, threading.Event())
    assert str(info.value) == (
        "invalid setting series_idle_ttl (env USAGE_CONSUMER_SERIES_IDLE_TTL, flag "
        "--series-idle-ttl): idle-series expiry is verified only for opentelemetry-sdk "
        "1.45.2; set it to 0 on this SDK"
    )
