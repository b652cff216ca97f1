"""The cardinality limit, made visible: series counts, overflow flags, exact totals, bounded memory.

Unit tests run the real SDK as the worker configures it (`build_meter_provider`) and read the
exposition text a scraper would see. The integration test floods a real worker with 100,000
distinct model names and watches its series, its totals and its resident memory.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from consumer.devtools.produce import synthetic_events
from consumer.exposition.cardinality import (
    LIMIT_METRIC,
    OVERFLOW_LABEL,
    OVERFLOW_METRIC,
    SERIES_METRIC,
)
from consumer.exposition.self_metrics import WorkerMetrics
from consumer.usage.provider import METER_NAME, build_meter_provider
from consumer.usage.tracker import TokenTracker, UsageOptions
from tests.conftest import TopicFactory
from tests.harness import (
    COUNTERS,
    Labels,
    Series,
    WorkerProcess,
    cache_read_tokens,
    expected_series,
    parse_exposition,
    total,
    twin_registries,
    usage_series,
)

HISTOGRAM = "llm_request_duration_milliseconds"
USAGE_METRICS = (*COUNTERS, HISTOGRAM)
OVERFLOW_SERIES: Labels = frozenset({(OVERFLOW_LABEL, "true")})

_OPTION_FIELDS = frozenset(f.name for f in dataclasses.fields(UsageOptions))


# --- helpers -------------------------------------------------------------------------------------


def flood_events(count: int, seed: int, start: int = 0) -> Iterator[dict[str, Any]]:
    """Synthetic events whose model (and requested model) is different in every event."""
    for n, event in enumerate(synthetic_events(count, seed), start=start):
        event["model"] = f"flood-model-{n:06d}"
        event["request_model"] = f"flood-request-{n:06d}"
        yield event


def to_options(event: Mapping[str, Any]) -> UsageOptions:
    return UsageOptions(**{k: v for k, v in event.items() if k in _OPTION_FIELDS})


def scrape(registry: CollectorRegistry) -> Series:
    return parse_exposition(generate_latest(registry).decode())


def metric_of(sample_name: str) -> str | None:
    """The `metric` label value of a predicted sample; None for samples that are not one per
    series (the histogram's _sum)."""
    if sample_name in COUNTERS:
        return sample_name
    if sample_name == HISTOGRAM + "_count":
        return HISTOGRAM
    return None


def label_sets(series: Series) -> dict[str, list[Labels]]:
    """Per usage metric, its label sets in the order they appear (one per series)."""
    out: dict[str, list[Labels]] = defaultdict(list)
    for name, labels in series:
        metric = metric_of(name)
        if metric is not None:
            out[metric].append(labels)
    return dict(out)


def gauge(series: Series, name: str, metric: str | None = None) -> float:
    labels: Labels = frozenset() if metric is None else frozenset({("metric", metric)})
    return series[(name, labels)]


def sums(series: Series) -> dict[str, float]:
    """Per predicted sample name (counters, histogram _count and _sum), the sum over all series."""
    out: dict[str, float] = defaultdict(float)
    for (name, _labels), value in usage_series(series).items():
        out[name] += value
    return dict(out)


def record(
    provider: MeterProvider, options: list[UsageOptions], batched: bool, batch: int = 64
) -> None:
    tracker = TokenTracker(provider.get_meter(METER_NAME))
    if batched:
        for start in range(0, len(options), batch):
            tracker.record_batch(options[start : start + batch])
    else:
        for opts in options:
            tracker.record_usage(opts)


# --- unit tests: the real SDK as build_meter_provider configures it -----------------------------


@pytest.mark.parametrize("batched", [True, False], ids=["record_batch", "record_usage"])
def test_below_the_limit_exact_series_and_no_overflow(batched: bool) -> None:
    events = list(flood_events(300, seed=5))
    limit = 1000
    registry = CollectorRegistry(auto_describe=True)
    record(build_meter_provider(registry, limit), [to_options(e) for e in events], batched)

    scraped = scrape(registry)
    expected = expected_series(events)
    assert usage_series(scraped) == expected
    assert all((OVERFLOW_LABEL, "true") not in labels for _name, labels in scraped)

    predicted = label_sets(expected)
    assert set(predicted) == set(USAGE_METRICS)  # the mix touches every instrument
    for metric in USAGE_METRICS:
        assert gauge(scraped, SERIES_METRIC, metric) == len(predicted[metric])
        assert gauge(scraped, OVERFLOW_METRIC, metric) == 0
    assert gauge(scraped, LIMIT_METRIC) == limit


@pytest.mark.parametrize("batched", [True, False], ids=["record_batch", "record_usage"])
def test_above_the_limit_overflow_is_flagged_and_totals_stay_exact(batched: bool) -> None:
    events = list(flood_events(400, seed=7))
    limit = 50
    registry = CollectorRegistry(auto_describe=True)
    record(build_meter_provider(registry, limit), [to_options(e) for e in events], batched)

    scraped = scrape(registry)
    got = usage_series(scraped)
    expected = expected_series(events)
    got_sets = label_sets(got)
    predicted = label_sets(expected)

    overflowed = {m for m in USAGE_METRICS if len(predicted[m]) > limit}
    # This mix must exercise both sides: request count and tokens overflow, errors do not.
    assert "llm_request_count_total" in overflowed
    assert "llm_request_errors_total" not in overflowed

    for metric in USAGE_METRICS:
        if metric in overflowed:
            # The first `limit` sets in arrival order keep their slots, with exact values; the
            # overflow series comes on top of them: limit + 1 series.
            assert got_sets[metric] == [*predicted[metric][:limit], OVERFLOW_SERIES]
            assert gauge(scraped, SERIES_METRIC, metric) == limit + 1
            assert gauge(scraped, OVERFLOW_METRIC, metric) == 1
        else:
            assert got_sets[metric] == predicted[metric]
            assert gauge(scraped, SERIES_METRIC, metric) == len(predicted[metric])
            assert gauge(scraped, OVERFLOW_METRIC, metric) == 0
    assert gauge(scraped, LIMIT_METRIC) == limit

    # Every series that kept its slot is exact...
    for key, value in got.items():
        if key[1] != OVERFLOW_SERIES:
            assert value == expected[key], key
    # ...and the sums over all series, overflow included, equal what was recorded: the totals
    # stay right, only the per-label detail of late-coming sets is lost.
    assert sums(scraped) == sums(expected)
    assert sums(scraped)["llm_request_count_total"] == len(events)
    assert sums(scraped)["llm_token_usage_input_total"] == sum(e["input_tokens"] for e in events)


@pytest.mark.parametrize("extra", [0, 1, 7])
def test_limit_n_keeps_n_series_and_adds_one_overflow_series(extra: int) -> None:
    limit = 20
    registry = CollectorRegistry()
    options = [UsageOptions(model=f"m{i}", status="success") for i in range(limit + extra)]
    record(build_meter_provider(registry, limit), options, batched=True)

    scraped = scrape(registry)
    requests = {labels: v for (n, labels), v in scraped.items() if n == "llm_request_count_total"}
    assert requests.get(OVERFLOW_SERIES, 0) == extra
    assert len(requests) == limit + (1 if extra else 0)
    assert sum(requests.values()) == limit + extra
    assert gauge(scraped, SERIES_METRIC, "llm_request_count_total") == len(requests)
    assert gauge(scraped, OVERFLOW_METRIC, "llm_request_count_total") == (1 if extra else 0)
    # Only the request counter recorded anything: no other usage metric is reported.
    assert {labels for (n, labels) in scraped if n == SERIES_METRIC} == {
        frozenset({("metric", "llm_request_count_total")})
    }


def test_usage_families_are_the_exporters_then_the_gauges() -> None:
    """The same SDK state through the OpenTelemetry Prometheus exporter and through ours."""
    ours, theirs, provider = twin_registries(30)
    record(provider, [to_options(e) for e in flood_events(100, seed=9)], batched=True)

    through = generate_latest(ours).decode()
    direct = generate_latest(theirs).decode()
    assert 'otel_metric_overflow="true"' in direct
    assert through.startswith(direct)
    assert all(
        line.startswith(("# HELP usage_consumer_", "# TYPE usage_consumer_", "usage_consumer_"))
        for line in through[len(direct) :].splitlines()
    )
    provider.shutdown()


def test_wiring_with_the_worker_registry_and_after_shutdown() -> None:
    registry = CollectorRegistry(auto_describe=True)  # as run_worker builds it
    provider = build_meter_provider(registry, 100)
    WorkerMetrics.create(registry)  # no name clash with the worker's own metrics

    # Nothing recorded yet: only the limit, no usage metric.
    scraped = scrape(registry)
    assert gauge(scraped, LIMIT_METRIC) == 100
    assert not [key for key in scraped if key[0] in (SERIES_METRIC, OVERFLOW_METRIC)]

    record(provider, [UsageOptions(model="m", status="success")], batched=True)
    assert gauge(scrape(registry), SERIES_METRIC, "llm_request_count_total") == 1

    # After shutdown the reader leaves its private registry; scrapes keep working.
    provider.shutdown()
    scraped = scrape(registry)
    assert gauge(scraped, LIMIT_METRIC) == 100
    assert total(scraped, "llm_request_count_total") == 0


# --- integration: a flood of distinct model names through a real worker --------------------------


def _produce(bootstrap: str, topic: str, payloads: Iterable[bytes]) -> int:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 200_000,
            "compression.type": "lz4",
        }
    )
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    sent = 0
    for payload in payloads:
        while True:
            try:
                producer.produce(topic, payload, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
        if sent % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    assert not failures, failures[:3]
    return sent


def _drain(worker: WorkerProcess, count: int, timeout: float) -> Series:
    """Scrape about once a second (the commit point may follow scrapes) until every event is in
    llm_request_count_total; return that scrape."""
    deadline = time.monotonic() + timeout
    recorded = -1.0
    while time.monotonic() < deadline:
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited ({worker.proc.returncode}):\n{worker.log()}")
        scraped = worker.scrape()
        recorded = total(scraped, "llm_request_count_total")
        if recorded >= count:
            assert recorded == count
            return scraped
        time.sleep(1.0)
    raise AssertionError(f"{recorded:.0f} of {count} events recorded after {timeout}s")


def _memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process, in MB."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


class _Oracle:
    """Sums over everything produced, and, for flood events (whose label sets are all distinct,
    so each event that touches a metric is one more label set of it), the label sets per metric.
    """

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.flood_sets: dict[str, int] = defaultdict(int)

    def add(self, e: Mapping[str, Any], flood: bool) -> None:
        inp, outp = e["input_tokens"], e["output_tokens"]
        for metric, value in (
            ("llm_token_usage_input_total", inp),
            ("llm_token_usage_output_total", outp),
            ("llm_token_total", inp + outp),
            ("llm_token_cache_input_total", cache_read_tokens(e)),
            ("llm_token_system_total", e["system_tokens"]),
            ("llm_request_count_total", 1),
            ("llm_request_errors_total", 1 if e["status"] == "error" else 0),
            (HISTOGRAM, e["latency_ms"]),
        ):
            if value > 0:
                if metric == HISTOGRAM:
                    self.sums[HISTOGRAM + "_count"] += 1
                    self.sums[HISTOGRAM + "_sum"] += float(value)
                else:
                    self.sums[metric] += value
                if flood:
                    self.flood_sets[metric] += 1

    def payloads(self, events: Iterable[dict[str, Any]], flood: bool) -> Iterator[bytes]:
        for event in events:
            self.add(event, flood)
            yield json.dumps(event).encode()


def few_label_sets(count: int, seed: int) -> Iterator[dict[str, Any]]:
    """Synthetic events reduced to a few hundred label sets per metric (at most 261 in 30,000
    events): no rule UUID (random in the full mix), one scenario, no tier."""
    for event in synthetic_events(count, seed):
        event.pop("rule_uuid", None)
        event["scenario"] = "openai"
        event["user_tier"] = ""
        yield event


@pytest.mark.integration
def test_flood_of_distinct_model_names_keeps_series_and_memory_bounded(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    limit = 1000
    warmup = 30_000
    flood_phases = (10_000, 45_000, 45_000)  # RSS is read after each: 10k, 55k, 100k names
    flood = flood_events(sum(flood_phases), seed=21)
    topic = topic_factory(3)
    oracle = _Oracle()

    # RSS readings are compared, so nothing but the names should move them. Measured here:
    # - a cold worker grows ~20 MB over its first ~100k events even with few label sets (batch
    #   and decoding buffers): the flood starts after a warm-up of few-label-set events;
    # - librdkafka prefetches up to queued.max.messages.kbytes (64 MB by default) while the worker
    #   lags behind the producer, and glibc keeps what each thread's malloc arena freed (up to 8
    #   arenas per core): both add tens of MB depending on timing, so the prefetch is capped to
    #   4 MB and MALLOC_ARENA_MAX=2. Neither setting depends on the names.
    worker = WorkerProcess(
        kafka_bootstrap,
        topic,
        group_id,
        tmp_path,
        "--cardinality-limit",
        str(limit),
        "--kafka-option",
        "queued.max.messages.kbytes=4096",
        env={"MALLOC_ARENA_MAX": "2"},
    ).start()
    assert worker.proc is not None
    rss: list[float] = []
    hwm: list[float] = []
    try:
        worker.wait_ready()
        started = time.monotonic()
        payloads = oracle.payloads(few_label_sets(warmup, seed=22), flood=False)
        assert _produce(kafka_bootstrap, topic, payloads) == warmup
        done = warmup
        warm = _drain(worker, done, timeout=30)
        warm_rss = _memory_mb(worker.proc.pid)["VmRSS"]
        for size in flood_phases:
            payloads = oracle.payloads(islice(flood, size), flood=True)  # distinct names
            assert _produce(kafka_bootstrap, topic, payloads) == size
            done += size
            scraped = _drain(worker, done, timeout=60)
            mem = _memory_mb(worker.proc.pid)
            rss.append(mem["VmRSS"])
            hwm.append(mem["VmHWM"])
        drained_s = time.monotonic() - started
    finally:
        worker.stop()
    print(
        f"\nworker RSS after the warm-up {warm_rss:.1f} MB; after 10k / 55k / 100k distinct names "
        f"{' / '.join(f'{mb:.1f}' for mb in rss)} MB, peak so far "
        f"{' / '.join(f'{mb:.1f}' for mb in hwm)} MB; {done:,} events in {drained_s:.1f} s"
    )

    # The warm-up stayed below the limit: no overflow anywhere.
    for metric in USAGE_METRICS:
        assert gauge(warm, OVERFLOW_METRIC, metric) == 0, metric
        assert 0 < gauge(warm, SERIES_METRIC, metric) < limit, metric

    # Every usage metric then saw far more distinct label sets than the limit: each shows its
    # overflow series, exactly limit + 1 series (counted in the scrape and reported by the gauge).
    scraped_sets = label_sets(usage_series(scraped))
    for metric in USAGE_METRICS:
        assert oracle.flood_sets[metric] > limit, metric
        assert gauge(scraped, OVERFLOW_METRIC, metric) == 1, metric
        assert OVERFLOW_SERIES in scraped_sets[metric], metric
        assert len(scraped_sets[metric]) == limit + 1, metric
        assert gauge(scraped, SERIES_METRIC, metric) == limit + 1, metric
    assert gauge(scraped, LIMIT_METRIC) == limit

    # The totals over all series, overflow included, are exactly what was produced.
    got = sums(scraped)
    assert got["llm_request_count_total"] == done
    assert got["llm_token_usage_input_total"] == oracle.sums["llm_token_usage_input_total"]
    assert got == oracle.sums

    # Memory. Without the limit each distinct name costs this worker ~14.6 KB (measured with
    # --cardinality-limit 1000000: RSS 209 / 499 / 795 MB after 10k / 30k / 50k names), so the
    # 90,000 names between the first and the last reading would add ~1.3 GB. With the limit the
    # slots are (nearly) all taken at the first reading; without scrapes RSS then stays flat
    # (81 / 80 / 80 MB measured), but each scrape here is ~24,000 lines (11 MB of text, ~35 MB
    # allocated at its peak), and how much of that the allocators keep varies: across 15 runs the
    # growth was 9-42 MB. 60 MB stays clear of that noise and ~20x below the unbounded growth.
    assert rss[2] - rss[0] < 60, rss
    assert max(rss) < 250, rss
    assert max(hwm) < 250, hwm
