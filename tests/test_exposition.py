"""The fast text renderer writes exactly what prometheus-client's generate_latest writes, and the
usage metrics exactly what the OpenTelemetry Prometheus exporter would have them write."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from consumer.devtools.produce import synthetic_events
from consumer.exposition.cardinality import SERIES_METRIC
from consumer.exposition.self_metrics import WorkerMetrics
from consumer.exposition.text import TextRenderer
from consumer.pipeline.validate import decode_fast
from consumer.usage.provider import METER_NAME, build_meter_provider
from consumer.usage.tracker import TokenTracker, UsageOptions
from tests.harness import twin_registries


def _worker_registry(limit: int = 10_000) -> tuple[CollectorRegistry, TokenTracker]:
    registry = CollectorRegistry(auto_describe=True)
    provider = build_meter_provider(registry, limit)
    WorkerMetrics.create(registry).consumed.inc(3)
    return registry, TokenTracker(provider.get_meter(METER_NAME), remembered_sets=limit)


def test_identical_to_generate_latest_on_a_worker_registry_across_scrapes() -> None:
    registry, tracker = _worker_registry(limit=300)
    renderer = TextRenderer()
    events = [decode_fast(json.dumps(e).encode(), 65_536) for e in synthetic_events(4000, 2)]
    for start in range(0, len(events), 1000):
        tracker.record_batch(events[start : start + 1000])  # type: ignore[arg-type]
        assert renderer.render(registry) == generate_latest(registry)
    assert b'otel_metric_overflow="true"' in renderer.render(registry)


def test_identical_on_hostile_label_values_and_every_metric_kind() -> None:
    registry, tracker = _worker_registry()
    hostile = ['a"b', "back\\slash", "new\nline", "ünïcödé 模型 🚀", "", "{}=,"]
    tracker.record_batch(
        UsageOptions(
            provider=p,
            model=p or "m",
            status="error",
            error_code=p,
            input_tokens=1,
            latency_ms=5,
            user_tier=p,
        )
        for p in hostile
    )
    Counter("odd_total_name", 'help with "quotes"\nand \\', ["x"], registry=registry).labels(
        x='v"1'
    ).inc()
    Gauge("plain_gauge", "g", registry=registry).set(1.5e-300)
    Histogram("h_seconds", "h", registry=registry, buckets=(0.1, float("inf"))).observe(0.05)
    renderer = TextRenderer()
    for _ in range(2):  # the second time from the label cache
        assert renderer.render(registry) == generate_latest(registry)


def test_the_label_cache_is_bounded_and_cleared_when_over() -> None:
    registry, tracker = _worker_registry()
    tracker.record_batch(
        [UsageOptions(provider=f"p{n}", model="m", status="success") for n in range(40)]
    )
    renderer = TextRenderer(max_cached=100)
    renderer.render(registry)
    in_use = dict(renderer._labels)
    assert 40 < len(in_use) <= 100  # every label set of one scrape, rendered once
    renderer._labels.update({(("stale", str(n)),): "{}" for n in range(100)})  # over the bound
    assert renderer.render(registry) == generate_latest(registry)
    assert renderer._labels == in_use  # cleared before rendering: only live sets came back


def _twins(limit: int) -> tuple[CollectorRegistry, CollectorRegistry, TokenTracker, Any]:
    ours, theirs, provider = twin_registries(limit)
    tracker = TokenTracker(provider.get_meter(METER_NAME), remembered_sets=limit)
    return ours, theirs, tracker, provider


def _usage_part(text: bytes) -> bytes:
    return text.split(f"# HELP {SERIES_METRIC} ".encode(), 1)[0]


_label_text = st.text(max_size=12)
_usage = st.builds(
    UsageOptions,
    provider=st.sampled_from(["openai", "anthropic", 'q"uote', "back\\slash", ""]),
    model=st.one_of(_label_text, st.sampled_from(["gpt-4o", "模型", "new\nline"])),
    scenario=st.sampled_from(["", "chat", "batch"]),
    input_tokens=st.integers(0, 10**7),
    output_tokens=st.integers(0, 10**4),
    cache_input_tokens=st.integers(0, 10**3),
    system_tokens=st.integers(0, 50),
    streamed=st.booleans(),
    status=st.sampled_from(["success", "error", ""]),
    error_code=st.sampled_from(["", "rate_limited", "x" * 100]),
    latency_ms=st.one_of(st.integers(0, 700_000), st.floats(0, 1e6, allow_nan=False)),
    user_tier=st.sampled_from(["", "free", "pro"]),
)


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.lists(_usage, max_size=40), min_size=1, max_size=4),
    limit=st.integers(1, 40),
)
def test_usage_text_is_the_exporters_byte_for_byte(
    batches: list[list[UsageOptions]], limit: int
) -> None:
    ours, theirs, tracker, provider = _twins(limit)
    renderer = TextRenderer()
    for batch in batches:
        tracker.record_batch(batch)
        expected = generate_latest(theirs)
        fast = renderer.render(ours)
        assert _usage_part(fast) == expected
        assert fast == generate_latest(ours)  # the lazy samples say the same
    provider.shutdown()


def test_chunks_join_to_the_whole_and_stay_small() -> None:
    registry, tracker = _worker_registry()
    events = [decode_fast(json.dumps(e).encode(), 65_536) for e in synthetic_events(6000, 4)]
    tracker.record_batch(events)  # type: ignore[arg-type]
    chunks = list(TextRenderer().chunks(registry))
    whole = "".join(chunks).encode()
    assert whole == generate_latest(registry)
    assert len(chunks) > 3
    assert max(len(c) for c in chunks) < 1_000_000
