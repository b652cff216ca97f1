"""The fast text renderer writes exactly what prometheus-client's generate_latest writes."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from consumer.exposition import TextRenderer
from consumer.metrics import WorkerMetrics
from consumer.produce import synthetic_events
from consumer.record import METER_NAME, build_meter_provider
from consumer.tracker import TokenTracker, UsageOptions
from consumer.validate import decode_fast


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
