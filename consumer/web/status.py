"""The status page: what one worker is doing, for the operator in front of it.

`build_status` assembles one plain dict from the objects the worker already has (the offset
ledger, the health state, the recent dead letters, the worker's metrics, the registry) and
`StatusPage` renders it twice: as JSON at `/status` and as a small server-rendered HTML page
at `/` (consumer.web.status_html: no scripts, no outside assets, every value escaped, because
rejected messages are attacker-controlled text). Both come from one dict: they cannot disagree.

The JSON shape (`status_version` 1; fields are only ever added under the same version):

    status_version      1
    generated_at        RFC 3339 UTC timestamp
    worker              group_id, member_id ("" before the first assignment), client_id, topic,
                        dead_letter_topic, commit_mode, group_protocol, metrics_profile,
                        started_at, uptime_seconds, live, ready, readiness (the /readyz text),
                        conditions ({name: why} of what holds the worker back), scrapes,
                        messages_consumed, events_recorded, unscraped_events,
                        oldest_unscraped_seconds, web ({tls, basic_auth})
    partitions          one per assigned partition, by topic and partition: topic, partition,
                        processed, recorded, covered, committable, committed (each the *next*
                        offset, -1 while unknown), lag (librdkafka's last statistics, null
                        before the first), held_dead_letters, unscraped_events,
                        oldest_unscraped_seconds, paused (reason code or null)
    paused              [{topic, partition, reason}]: reason is backpressure or dead_letter
    dead_letters        topic, rejected, acknowledged, failed (totals), by_reason: [{reason,
                        rejected, acknowledged, failed, examples: [{topic, partition, offset,
                        at, detail, value_prefix, value_bytes}]}] (the last few, oldest first)
    unknown_fields      [{field, events, known_as}]: fields of valid events the schema does not
                        know, ignored, by name (known_as: the field it likely means, or null)
    keys                attribute_sets (seen, in sampled batches), on_several_partitions (0 when
                        producers key by attribute set: consumer.pipeline.spread)
    cardinality         limit, metrics: [{metric, series, overflow, expired}] per usage metric
                        (expired: series removed by series_idle_ttl since start-up),
                        age_seconds (counted by a collect at most 5 s old: see SeriesCounts),
                        idle_ttl_seconds (0: series never expire), expired (total)
    settings            an allow-list of settings (`SHOWN_SETTINGS`): never credentials, never
                        kafka_options (free-form, so possibly secret), never file paths
    links               relative URLs of metrics, status, healthz, readyz

Counts since start-up come from this process (a restarted worker starts again at zero).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from consumer.exposition.cardinality import LIMIT_METRIC, OVERFLOW_METRIC, SERIES_METRIC
from consumer.exposition.self_metrics import WorkerMetrics
from consumer.kafka.source import PartitionKey
from consumer.pipeline.deadletter import RecentDeadLetters
from consumer.pipeline.health import HealthState
from consumer.pipeline.ledger import OffsetLedger
from consumer.pipeline.spread import KeySpread
from consumer.pipeline.validate import known_as
from consumer.settings import Settings
from consumer.web.status_html import render_html

__all__ = [
    "SHOWN_SETTINGS",
    "STATUS_VERSION",
    "SeriesCounts",
    "StatusPage",
    "StatusSources",
    "build_status",
]

STATUS_VERSION = 1

# Shown as they are. Anything not listed stays off the page: credentials (sasl_*), the
# free-form kafka_options, and paths that say more about the host than the worker.
SHOWN_SETTINGS = (
    "bootstrap_servers",
    "topic",
    "group_id",
    "client_id",
    "commit_mode",
    "group_protocol",
    "metrics_profile",
    "batch_size",
    "batch_wait_ms",
    "max_message_bytes",
    "cardinality_limit",
    "series_idle_ttl",
    "unknown_fields",
    "dlq_timeout_ms",
    "max_unscraped_events",
    "max_unscraped_age_ms",
    "handover_timeout_ms",
    "statistics_interval_ms",
    "security_protocol",
    "sasl_mechanism",
    "metrics_port",
    "log_level",
)


@dataclass(frozen=True)
class StatusSources:
    """Everything the status is built from, handed in by consumer.app.run_worker."""

    settings: Settings
    ledger: OffsetLedger
    health: HealthState
    dead_letters: RecentDeadLetters
    metrics: WorkerMetrics
    series: SeriesCounts
    spread: KeySpread | None = None
    member_id: Callable[[], str] = lambda: ""
    tls: bool = False
    basic_auth: bool = False
    started_at: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)


def _timestamp(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


def _worker_numbers(metrics: WorkerMetrics) -> dict[str, Any]:
    """Lag, pauses and totals from the worker's own metrics: cheap, so always fresh."""
    lag: dict[PartitionKey, int] = {}
    paused: dict[PartitionKey, str] = {}
    for family in metrics.consumer_lag.collect():
        for sample in family.samples:
            lag[(sample.labels["topic"], int(sample.labels["partition"]))] = int(sample.value)
    for family in metrics.partition_paused.collect():
        for sample in family.samples:
            if sample.value == 1:
                key = (sample.labels["topic"], int(sample.labels["partition"]))
                paused[key] = sample.labels["reason"]
    expired: dict[str, int] = {}
    for family in metrics.series_expired.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                expired[sample.labels["metric"]] = int(sample.value)
    totals = {}
    for name, counter in (
        ("scrapes", metrics.scrapes),
        ("messages_consumed", metrics.consumed),
        ("events_recorded", metrics.recorded),
    ):
        totals[name] = int(
            next(s.value for f in counter.collect() for s in f.samples if s.name.endswith("_total"))
        )
    unknown: dict[str, int] = {}
    for family in metrics.unknown_fields.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                unknown[sample.labels["field"]] = int(sample.value)
    return {
        "lag": lag,
        "paused": paused,
        "totals": totals,
        "expired": expired,
        "unknown": unknown,
    }


class SeriesCounts:
    """Series per usage metric, from the cardinality gauges of one registry collect.

    A collect runs the SDK over every series (most of a scrape's cost: ~0.7 s for 50,000
    series), so its result is reused for `max_age_s`: a browser tab left refreshing must not
    cost the worker a scrape each time. The status says how old the counts are. The usage
    families go by untouched (their samples are built only when read). The caller holds the
    scrape lock (consumer.web.server)."""

    def __init__(self, registry: CollectorRegistry, max_age_s: float = 5.0) -> None:
        self._registry = registry
        self._max_age_s = max_age_s
        self._cached: tuple[float, dict[str, Any]] | None = None

    def read(self, monotonic: float) -> dict[str, Any]:
        if self._cached is not None and monotonic - self._cached[0] < self._max_age_s:
            return {**self._cached[1], "age_seconds": round(monotonic - self._cached[0], 3)}
        series: dict[str, int] = {}
        overflow: dict[str, bool] = {}
        limit = 0
        for family in self._registry.collect():
            if family.name not in (SERIES_METRIC, OVERFLOW_METRIC, LIMIT_METRIC):
                continue
            for sample in family.samples:
                if family.name == SERIES_METRIC:
                    series[sample.labels["metric"]] = int(sample.value)
                elif family.name == OVERFLOW_METRIC:
                    overflow[sample.labels["metric"]] = sample.value == 1
                else:
                    limit = int(sample.value)
        numbers = {
            "limit": limit,
            "metrics": [
                {"metric": m, "series": series[m], "overflow": overflow.get(m, False)}
                for m in sorted(series)
            ],
        }
        self._cached = (monotonic, numbers)
        return {**numbers, "age_seconds": 0.0}


def build_status(
    sources: StatusSources, *, now: float | None = None, monotonic: float | None = None
) -> dict[str, Any]:
    """The status as one JSON-ready dict (the shape is in the module docstring)."""
    now = time.time() if now is None else now
    monotonic = time.monotonic() if monotonic is None else monotonic
    settings, health = sources.settings, sources.health
    numbers = _worker_numbers(sources.metrics)
    states = sources.ledger.states()
    live, _ = health.alive()
    ready, readiness = health.ready()
    partitions = [
        {
            "topic": topic,
            "partition": partition,
            "processed": state.processed,
            "recorded": state.recorded,
            "covered": state.covered,
            "committable": state.committable,
            "committed": state.committed,
            "lag": numbers["lag"].get((topic, partition)),
            "held_dead_letters": state.held,
            "unscraped_events": state.unscraped_events,
            "oldest_unscraped_seconds": round(state.oldest_unscraped_s, 3),
            "paused": numbers["paused"].get((topic, partition)),
        }
        for (topic, partition), state in sorted(states.items())
    ]
    reasons = sources.dead_letters.snapshot()
    by_reason = [
        {
            "reason": reason,
            "rejected": counts.rejected,
            "acknowledged": counts.acknowledged,
            "failed": counts.failed,
            "examples": [
                {
                    "topic": ex.topic,
                    "partition": ex.partition,
                    "offset": ex.offset,
                    "at": _timestamp(ex.at),
                    "detail": ex.detail,
                    "value_prefix": ex.value_prefix,
                    "value_bytes": ex.value_bytes,
                }
                for ex in counts.examples
            ],
        }
        for reason, counts in reasons.items()
    ]
    return {
        "status_version": STATUS_VERSION,
        "generated_at": _timestamp(now),
        "worker": {
            "group_id": settings.group_id,
            "member_id": sources.member_id(),
            "client_id": settings.client_id,
            "topic": settings.topic,
            "dead_letter_topic": settings.dead_letter_topic,
            "commit_mode": settings.commit_mode,
            "group_protocol": settings.group_protocol,
            "metrics_profile": settings.metrics_profile,
            "started_at": _timestamp(sources.started_at),
            "uptime_seconds": round(max(0.0, monotonic - sources.started_monotonic), 3),
            "live": live,
            "ready": ready,
            "readiness": readiness,
            "conditions": dict(sorted(health.not_ready.items())),
            **numbers["totals"],
            "unscraped_events": sum(s.unscraped_events for s in states.values()),
            "oldest_unscraped_seconds": round(
                max((s.oldest_unscraped_s for s in states.values()), default=0.0), 3
            ),
            "web": {"tls": sources.tls, "basic_auth": sources.basic_auth},
        },
        "partitions": partitions,
        "paused": [
            {"topic": topic, "partition": partition, "reason": reason}
            for (topic, partition), reason in sorted(numbers["paused"].items())
        ],
        "dead_letters": {
            "topic": settings.dead_letter_topic,
            "rejected": sum(r["rejected"] for r in by_reason),
            "acknowledged": sum(r["acknowledged"] for r in by_reason),
            "failed": sum(r["failed"] for r in by_reason),
            "by_reason": by_reason,
        },
        "cardinality": _cardinality(
            sources.series.read(monotonic), numbers["expired"], settings.series_idle_ttl
        ),
        "unknown_fields": [
            {"field": name, "events": count, "known_as": known_as(name)}
            for name, count in sorted(numbers["unknown"].items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "keys": {
            "attribute_sets": sources.spread.sets if sources.spread else 0,
            "on_several_partitions": (
                sources.spread.on_several_partitions if sources.spread else 0
            ),
        },
        "settings": {name: getattr(settings, name) for name in SHOWN_SETTINGS},
        "links": {
            "metrics": "metrics",
            "status": "status",
            "healthz": "healthz",
            "readyz": "readyz",
        },
    }


def _cardinality(counts: dict[str, Any], expired: dict[str, int], ttl: float) -> dict[str, Any]:
    """Series counts with what idle expiry removed, per metric (a metric all of whose series
    expired still has its row, with 0 series)."""
    rows = {m["metric"]: {**m, "expired": expired.get(m["metric"], 0)} for m in counts["metrics"]}
    for metric, count in expired.items():
        rows.setdefault(
            metric, {"metric": metric, "series": 0, "overflow": False, "expired": count}
        )
    return {
        **counts,
        "metrics": [rows[m] for m in sorted(rows)],
        "idle_ttl_seconds": ttl,
        "expired": sum(expired.values()),
    }


class StatusPage:
    """`consumer.web.server.StatusView`: the status as JSON and as HTML."""

    def __init__(self, sources: StatusSources) -> None:
        self._sources = sources

    def json(self) -> bytes:
        return to_json(build_status(self._sources))

    def html(self) -> bytes:
        return render_html(build_status(self._sources)).encode("utf-8")


def to_json(status: dict[str, Any]) -> bytes:
    return json.dumps(status, indent=2).encode("ascii") + b"\n"
