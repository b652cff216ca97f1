"""The status page: what one worker is doing, for the operator in front of it.

`build_status` assembles one plain dict from the objects the worker already has (the offset
ledger, the health state, the recent dead letters, the worker's metrics, the registry) and
`StatusPage` renders it twice: as JSON at `/status` and as a small server-rendered HTML page
at `/` (no scripts, no outside assets; every value goes through `html.escape`, because rejected
messages are attacker-controlled text). Both come from the same dict, so they cannot disagree.

The JSON shape (`status_version` 1; fields are only ever added under the same version):

    status_version      1
    generated_at        RFC 3339 UTC timestamp
    worker              group_id, member_id ("" before the first assignment), client_id, topic,
                        dead_letter_topic, commit_mode, group_protocol, started_at,
                        uptime_seconds, live, ready, readiness (the /readyz text), conditions
                        ({name: why} of what holds the worker back), scrapes,
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
    cardinality         limit, metrics: [{metric, series, overflow}] per usage metric,
                        age_seconds (counted by a collect at most 5 s old: see SeriesCounts)
    settings            an allow-list of settings (`SHOWN_SETTINGS`): never credentials, never
                        kafka_options (free-form, so possibly secret), never file paths
    links               relative URLs of metrics, status, healthz, readyz

Counts since start-up come from this process (a restarted worker starts again at zero).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException
from prometheus_client import CollectorRegistry

from consumer.cardinality import LIMIT_METRIC, OVERFLOW_METRIC, SERIES_METRIC
from consumer.commit import OffsetLedger, PartitionKey
from consumer.deadletter import RecentDeadLetters
from consumer.metrics import WorkerMetrics
from consumer.serve import HealthState
from consumer.settings import Settings
from consumer.source import RebalanceListener

__all__ = [
    "SHOWN_SETTINGS",
    "STATUS_VERSION",
    "Membership",
    "SeriesCounts",
    "StatusPage",
    "StatusSources",
    "build_status",
    "render_html",
]

log = logging.getLogger(__name__)

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
    "batch_size",
    "batch_wait_ms",
    "max_message_bytes",
    "cardinality_limit",
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


class Membership:
    """A rebalance listener in front of the worker's: notes the group member id.

    Rebalance callbacks run in the worker's thread, inside consume(), so the Consumer is asked
    there and never from an HTTP thread (which could race its close() at shutdown). A member
    that rejoins under a new id is re-assigned, so the id stays current."""

    def __init__(self, listener: RebalanceListener) -> None:
        self._listener = listener
        self.member_id = ""

    def _note(self, consumer: Consumer) -> None:
        try:
            self.member_id = consumer.memberid() or ""
        except (RuntimeError, KafkaException) as exc:
            log.debug("no member id: %s", exc)

    def on_assigned(self, consumer: Consumer, keys: list[PartitionKey]) -> None:
        self._note(consumer)
        self._listener.on_assigned(consumer, keys)

    def on_revoked(self, consumer: Consumer, keys: list[PartitionKey], lost: bool) -> None:
        self._listener.on_revoked(consumer, keys, lost)


@dataclass(frozen=True)
class StatusSources:
    """Everything the status is built from, handed in by consumer.cli.run_worker."""

    settings: Settings
    ledger: OffsetLedger
    health: HealthState
    dead_letters: RecentDeadLetters
    metrics: WorkerMetrics
    series: SeriesCounts
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
    totals = {}
    for name, counter in (
        ("scrapes", metrics.scrapes),
        ("messages_consumed", metrics.consumed),
        ("events_recorded", metrics.recorded),
    ):
        totals[name] = int(
            next(s.value for f in counter.collect() for s in f.samples if s.name.endswith("_total"))
        )
    return {"lag": lag, "paused": paused, "totals": totals}


class SeriesCounts:
    """Series per usage metric, from the cardinality gauges of one registry collect.

    A collect runs the SDK over every series (most of a scrape's cost: ~0.7 s for 50,000
    series), so its result is reused for `max_age_s`: a browser tab left refreshing must not
    cost the worker a scrape each time. The status says how old the counts are. The usage
    families go by untouched (their samples are built only when read). The caller holds the
    scrape lock (consumer.serve)."""

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
        "cardinality": sources.series.read(monotonic),
        "settings": {name: getattr(settings, name) for name in SHOWN_SETTINGS},
        "links": {
            "metrics": "metrics",
            "status": "status",
            "healthz": "healthz",
            "readyz": "readyz",
        },
    }


class StatusPage:
    """`consumer.serve.StatusView`: the status as JSON and as HTML."""

    def __init__(self, sources: StatusSources) -> None:
        self._sources = sources

    def json(self) -> bytes:
        return to_json(build_status(self._sources))

    def html(self) -> bytes:
        return render_html(build_status(self._sources)).encode("utf-8")


def to_json(status: dict[str, Any]) -> bytes:
    return json.dumps(status, indent=2).encode("ascii") + b"\n"


# --- HTML -----------------------------------------------------------------------------------


def _e(value: object) -> str:
    """Every value on the page goes through here: text, numbers, attributes alike."""
    if value is None:
        return "&mdash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return html.escape(str(value), quote=True)


def _table(headers: Iterable[str], rows: Iterable[Iterable[object]], css: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    cls = f' class="{_e(css)}"' if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pairs(items: Iterable[tuple[str, object]]) -> str:
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>"


def _uptime(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d1d1f;background:#fff}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
.sub{color:#555;margin:0 0 1em}.ok{color:#1a7f37}.bad{color:#b42318;font-weight:600}
table{border-collapse:collapse;margin:.3em 0}th,td{border:1px solid #ddd;padding:.25em .6em}
th{background:#f4f4f5;text-align:left}td{font-variant-numeric:tabular-nums}
table.num td:not(:first-child){text-align:right}
dl{display:grid;grid-template-columns:max-content auto;gap:.15em 1em;margin:.3em 0}
dt{color:#555}dd{margin:0}code,.value{font-family:ui-monospace,monospace;font-size:.92em}
.value{white-space:pre-wrap;word-break:break-all;background:#f8f8f8;padding:.1em .3em}
"""


def render_html(status: dict[str, Any]) -> str:
    """The page: one `status` dict in, escaped HTML out."""
    worker = status["worker"]
    ready_class = "ok" if worker["ready"] else "bad"
    title = f"usage-consumer {worker['group_id']} / {worker['topic']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">member <code id="member-id">{_e(worker["member_id"] or "(none yet)")}'
        f"</code> &middot; up {_e(_uptime(worker['uptime_seconds']))} since "
        f'{_e(worker["started_at"])} &middot; <span id="readiness" class="{ready_class}">'
        f'{_e(worker["readiness"])}</span> &middot; <a href="metrics">/metrics</a> &middot; '
        '<a href="status">/status (JSON)</a></p>',
        "<h2>Worker</h2>",
        _pairs(
            [
                ("group id", worker["group_id"]),
                ("member id", worker["member_id"]),
                ("client id", worker["client_id"]),
                ("topic", worker["topic"]),
                ("dead-letter topic", worker["dead_letter_topic"]),
                ("commit mode", worker["commit_mode"]),
                ("group protocol", worker["group_protocol"]),
                ("live", worker["live"]),
                ("ready", worker["ready"]),
                ("scrapes", worker["scrapes"]),
                ("messages consumed", worker["messages_consumed"]),
                ("events recorded", worker["events_recorded"]),
                ("events waiting for a scrape", worker["unscraped_events"]),
                ("oldest waiting (s)", worker["oldest_unscraped_seconds"]),
                ("TLS", worker["web"]["tls"]),
                ("basic auth", worker["web"]["basic_auth"]),
                ("generated at", status["generated_at"]),
            ]
        ),
    ]
    if worker["conditions"]:
        parts.append("<h2>Held back</h2>")
        parts.append(_table(["condition", "why"], sorted(worker["conditions"].items())))
    parts.append(f"<h2>Partitions ({len(status['partitions'])} assigned)</h2>")
    parts.append(
        _table(
            [
                "partition",
                "processed",
                "recorded",
                "scrape-covered",
                "committable",
                "committed",
                "lag",
                "held dead letters",
                "waiting for a scrape",
                "paused",
            ],
            (
                [
                    f"{p['topic']}/{p['partition']}",
                    p["processed"],
                    p["recorded"],
                    p["covered"],
                    p["committable"],
                    p["committed"],
                    p["lag"],
                    p["held_dead_letters"],
                    p["unscraped_events"],
                    p["paused"],
                ]
                for p in status["partitions"]
            ),
            "num partitions",
        )
    )
    if status["paused"]:
        parts.append("<h2>Paused</h2>")
        parts.append(
            _table(
                ["partition", "reason", "why"],
                (
                    [
                        f"{p['topic']}/{p['partition']}",
                        p["reason"],
                        worker["conditions"].get(p["reason"], ""),
                    ]
                    for p in status["paused"]
                ),
            )
        )
    dead = status["dead_letters"]
    parts.append(f"<h2>Dead letters to {_e(dead['topic'])}</h2>")
    parts.append(
        _table(
            ["reason", "rejected", "acknowledged", "failed writes"],
            [
                *(
                    [r["reason"], r["rejected"], r["acknowledged"], r["failed"]]
                    for r in dead["by_reason"]
                ),
                ["total", dead["rejected"], dead["acknowledged"], dead["failed"]],
            ],
            "num dead-letters",
        )
    )
    for reason in dead["by_reason"]:
        parts.append(f"<h3>Last {_e(len(reason['examples']))} {_e(reason['reason'])}</h3>")
        parts.append('<table class="examples"><thead><tr><th>source</th><th>at</th>')
        parts.append("<th>detail</th><th>value (prefix)</th></tr></thead><tbody>")
        for ex in reason["examples"]:
            size = "null" if ex["value_bytes"] < 0 else f"{ex['value_bytes']} bytes"
            parts.append(
                f"<tr><td>{_e(ex['topic'])}/{_e(ex['partition'])}@{_e(ex['offset'])}</td>"
                f"<td>{_e(ex['at'])}</td><td>{_e(ex['detail'])}</td>"
                f'<td><span class="value">{_e(ex["value_prefix"])}</span> '
                f"<small>({_e(size)})</small></td></tr>"
            )
        parts.append("</tbody></table>")
    cardinality = status["cardinality"]
    parts.append(
        f"<h2>Series per usage metric (limit {_e(cardinality['limit'])}, counted "
        f"{_e(round(cardinality['age_seconds']))} s ago)</h2>"
    )
    parts.append(
        _table(
            ["metric", "series", "overflow"],
            (
                [m["metric"], m["series"], "OVERFLOW" if m["overflow"] else "no"]
                for m in cardinality["metrics"]
            ),
            "num cardinality",
        )
    )
    parts.append("<h2>Settings</h2>")
    parts.append(_pairs(status["settings"].items()))
    parts.append("</body></html>")
    return "\n".join(parts)
