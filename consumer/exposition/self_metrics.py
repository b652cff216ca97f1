"""The worker's own metrics, for the operators who run it (not the LLM usage it records).

They live on the same registry as the usage metrics, so one scrape carries both. The registry is
passed in; nothing here is global.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["MAX_UNKNOWN_FIELD_NAMES", "UNKNOWN_OTHER", "WorkerMetrics"]

MAX_UNKNOWN_FIELD_NAMES: Final = 100
UNKNOWN_OTHER: Final = "_other"

_BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000, 100_000)


@dataclass(frozen=True)
class WorkerMetrics:
    consumed: Counter
    recorded: Counter
    rejected: Counter
    dead_lettered: Counter
    dead_letter_failures: Counter
    batches: Counter
    batch_size: Histogram
    commits: Counter
    commit_failures: Counter
    assigned_partitions: Gauge
    consumer_lag: Gauge
    scrapes: Counter
    scrape_responses: Counter
    backpressure: Gauge
    pauses: Counter
    partition_paused: Gauge
    revocations: Counter
    revocation_wait: Histogram
    series_expired: Counter
    unknown_fields: Counter
    # Field names come from producers: label only this many distinct ones, the rest as _other.
    _unknown_names: set[str] = field(default_factory=set)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerMetrics:
        p = "usage_consumer_"
        tp = ("topic", "partition")
        return cls(
            consumed=Counter(
                p + "messages_consumed", "Kafka messages read from the topic.", registry=registry
            ),
            recorded=Counter(
                p + "events_recorded", "Valid events recorded into the meters.", registry=registry
            ),
            rejected=Counter(
                p + "messages_rejected",
                "Invalid messages, by reason code.",
                ["reason"],
                registry=registry,
            ),
            dead_lettered=Counter(
                p + "dead_letters",
                "Rejected messages the dead-letter topic acknowledged, by reason code.",
                ["reason"],
                registry=registry,
            ),
            dead_letter_failures=Counter(
                p + "dead_letter_failures",
                "Attempts to write the dead-letter topic that failed (retried; the partition "
                "does not advance meanwhile).",
                registry=registry,
            ),
            batches=Counter(p + "batches", "Batches processed.", registry=registry),
            batch_size=Histogram(
                p + "batch_size",
                "Messages per batch.",
                buckets=_BATCH_SIZE_BUCKETS,
                registry=registry,
            ),
            commits=Counter(p + "commits", "Successful offset commits.", registry=registry),
            commit_failures=Counter(
                p + "commit_failures", "Offset commits that failed.", registry=registry
            ),
            assigned_partitions=Gauge(
                p + "assigned_partitions", "Partitions assigned to this worker.", registry=registry
            ),
            consumer_lag=Gauge(
                p + "consumer_lag",
                "Messages between the partition's end and this worker's position "
                "(from librdkafka statistics).",
                tp,
                registry=registry,
            ),
            scrapes=Counter(
                p + "scrapes",
                "/metrics responses written completely (each may let offsets advance).",
                registry=registry,
            ),
            scrape_responses=Counter(
                p + "scrape_responses",
                "/metrics responses written completely, by content encoding (gzip when the "
                "scraper accepts it, as Prometheus does; identity otherwise).",
                ["encoding"],
                registry=registry,
            ),
            backpressure=Gauge(
                p + "backpressure",
                "1 while reading is paused because too many recorded events wait for a scrape.",
                registry=registry,
            ),
            pauses=Counter(
                p + "pauses",
                "Times partitions were paused, by reason (backpressure, dead_letter).",
                ["reason"],
                registry=registry,
            ),
            partition_paused=Gauge(
                p + "partition_paused",
                "1 while the partition is paused, by reason.",
                (*tp, "reason"),
                registry=registry,
            ),
            revocations=Counter(
                p + "revocations",
                "Partitions revoked, by outcome: covered (a scrape covered them before they "
                "were committed and released), timeout (released uncovered: the next owner "
                "replays), commit_failed (the group moved on before the commit: the next owner "
                "replays what the last scrapes covered), lost (taken away without a hand-over).",
                ["outcome"],
                registry=registry,
            ),
            revocation_wait=Histogram(
                p + "revocation_wait_seconds",
                "Time a revocation waited for a scrape to cover its partitions.",
                buckets=(0.01, 0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
                registry=registry,
            ),
            unknown_fields=Counter(
                p + "unknown_fields",
                "Fields of valid events the schema does not know, ignored (unknown_fields=ignore),"
                " by name; the first 100 names, later ones as _other.",
                ["field"],
                registry=registry,
            ),
            series_expired=Counter(
                p + "series_expired",
                "Usage series removed after series_idle_ttl without an update, by metric (as "
                "on its # TYPE line). A set that comes back starts a new series from zero.",
                ["metric"],
                registry=registry,
            ),
        )

    def count_unknown_field(self, name: str, count: int) -> None:
        label = name if len(name) <= 64 and name.isprintable() else UNKNOWN_OTHER
        if label not in self._unknown_names:
            if len(self._unknown_names) >= MAX_UNKNOWN_FIELD_NAMES:
                label = UNKNOWN_OTHER
            self._unknown_names.add(label)
        self.unknown_fields.labels(label).inc(count)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop per-partition series when a partition leaves, so stale values do not linger."""
        with contextlib.suppress(KeyError):  # never set for this partition
            self.consumer_lag.remove(topic, str(partition))
        for reason in ("backpressure", "dead_letter"):
            with contextlib.suppress(KeyError):
                self.partition_paused.remove(topic, str(partition), reason)
