"""The status page: `/` (HTML) and `/status` (JSON), built once from the worker's own objects.

Unit tests hold the builder to exact values and the HTML to strict escaping; the integration
test runs a real worker on the session broker, feeds it hostile invalid messages, and opens the
page in headless Chromium (Debian's, driven by Playwright) to check nothing in it runs.
"""

from __future__ import annotations

import http.client
import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from consumer.devtools.produce import synthetic_events
from consumer.exposition.self_metrics import WorkerMetrics
from consumer.pipeline.deadletter import EXAMPLE_VALUE_CHARS, DeadLetter, RecentDeadLetters
from consumer.pipeline.health import HealthState
from consumer.pipeline.ledger import OffsetLedger
from consumer.pipeline.spread import KeySpread
from consumer.pipeline.validate import Reason, Rejection, decode
from consumer.settings import Settings
from consumer.usage.provider import METER_NAME, build_meter_provider
from consumer.usage.tracker import TokenTracker, UsageOptions
from consumer.web.server import MetricsServer
from consumer.web.status import (
    SHOWN_SETTINGS,
    SeriesCounts,
    StatusPage,
    StatusSources,
    build_status,
)
from consumer.web.status_html import render_html
from tests.conftest import TopicFactory
from tests.harness import WorkerProcess, expected_series

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parents[1] / ".local" / "screenshots" / "status-page.png"

HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    'it\'s "quoted" & <b>bold</b>',
    "ünïcödé 模型 🚀 <i>x</i>",
]
SECRETS = ["hunter2-never-shown", "secret-kafka-option", "/etc/secret/web.yml", "svc-user"]


def _letter(
    topic: str, partition: int, offset: int, value: bytes | None, reason: Reason
) -> DeadLetter:
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key=None,
        value=value,
        headers=[],
        timestamp_ms=0,
        rejection=Rejection(reason, f"detail of {offset}"),
    )


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "topic": "llm-usage",
        "group_id": "usage-group",
        "client_id": "worker-a",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_username": "svc-user",
        "sasl_password": "hunter2-never-shown",
        "kafka_options": {"sasl.oauthbearer.config": "secret-kafka-option"},
        "web_config_file": "/etc/secret/web.yml",
        "cardinality_limit": 100,
        "series_idle_ttl": "10m",
    }
    return Settings(**{**values, **overrides})


def _sources(
    settings: Settings,
) -> tuple[StatusSources, WorkerMetrics, OffsetLedger, CollectorRegistry]:
    registry = CollectorRegistry(auto_describe=True)
    provider = build_meter_provider(registry, settings.cardinality_limit)
    tracker = TokenTracker(provider.get_meter(METER_NAME), remembered_sets=100)
    # 150 models for a limit of 100: the first 100 keep their series, the rest overflow.
    tracker.record_batch(
        UsageOptions(provider="openai", model=f"m{n}", status="success", input_tokens=2)
        for n in range(150)
    )
    metrics = WorkerMetrics.create(registry)
    metrics.scrapes.inc(3)
    metrics.consumed.inc(70)
    metrics.recorded.inc(54)
    # Idle expiry removed 4 request-count series, and every errors series there was.
    metrics.series_expired.labels("llm_request_count_total").inc(4)
    metrics.series_expired.labels("llm_request_errors_total").inc(2)
    metrics.count_unknown_field("x_trace", 1)
    metrics.count_unknown_field("inputTokens", 3)
    metrics.consumer_lag.labels("llm-usage", "0").set(12)
    metrics.partition_paused.labels("llm-usage", "0", "backpressure").set(0)
    metrics.partition_paused.labels("llm-usage", "1", "dead_letter").set(1)
    health = HealthState(assigned=2)
    health.not_ready["dead_letter"] = "writes to llm-usage.dlq failing; holding llm-usage/1"

    ledger = OffsetLedger("scrape")
    p0, p1 = ("llm-usage", 0), ("llm-usage", 1)
    ledger.assign([p0, p1])
    ledger.advance(p0, 50, recorded=40, last_recorded=45)
    ledger.cover(ledger.snapshot())  # a scrape covered p0 up to 50
    ledger.advance(p0, 60, recorded=5, last_recorded=58)
    ledger.mark_committed([TopicPartition("llm-usage", 0, 50)])
    ledger.hold(p1, 7)  # a dead letter at 7 not acknowledged
    ledger.advance(p1, 10, recorded=9, last_recorded=9)

    recent = RecentDeadLetters()
    for offset in range(3):
        recent.rejected(_letter("llm-usage", 1, offset, b"{bad", Reason.INVALID_JSON), at=1e9)
    recent.acknowledged(_letter("llm-usage", 1, 0, b"{bad", Reason.INVALID_JSON))
    recent.rejected(_letter("llm-usage", 1, 7, None, Reason.EMPTY), at=1e9 + 1)
    recent.failed(_letter("llm-usage", 1, 7, None, Reason.EMPTY))
    # Two attribute sets: one arrived on partitions 0 and 1 (keyed otherwise), one on 0 only.
    spread = KeySpread(limit=10, every=1)
    spread.observe(
        [UsageOptions(provider="a"), UsageOptions(provider="b"), UsageOptions(provider="a")],
        [0, 0, 1],
    )
    sources = StatusSources(
        settings=settings,
        ledger=ledger,
        health=health,
        dead_letters=recent,
        metrics=metrics,
        series=SeriesCounts(registry),
        spread=spread,
        member_id=lambda: "rdkafka-1234",
        tls=True,
        basic_auth=False,
        started_at=1_700_000_000.0,
        started_monotonic=100.0,
    )
    return sources, metrics, ledger, registry


def _drop_ages(status: dict[str, Any]) -> list[float]:
    """The ages of waiting events depend on the clock: take them out, return them."""
    ages = [status["worker"].pop("oldest_unscraped_seconds")]
    ages += [p.pop("oldest_unscraped_seconds") for p in status["partitions"]]
    return ages


def test_the_status_builder_reports_every_section_exactly() -> None:
    sources, _, _, _ = _sources(_settings())
    status = build_status(sources, now=1_700_000_090.5, monotonic=190.25)
    ages = _drop_ages(status)
    assert all(0 <= age < 5 for age in ages)
    assert ages[0] == max(ages[1:])
    example = {"at": "2001-09-09T01:46:40+00:00", "value_prefix": "{bad", "value_bytes": 4}
    assert status == {
        "status_version": 1,
        "generated_at": "2023-11-14T22:14:50+00:00",
        "worker": {
            "group_id": "usage-group",
            "member_id": "rdkafka-1234",
            "client_id": "worker-a",
            "topic": "llm-usage",
            "dead_letter_topic": "llm-usage.dlq",
            "commit_mode": "scrape",
            "group_protocol": "classic",
            "metrics_profile": "llm",
            "started_at": "2023-11-14T22:13:20+00:00",
            "uptime_seconds": 90.25,
            "live": True,
            "ready": False,
            "readiness": "dead_letter: writes to llm-usage.dlq failing; holding llm-usage/1",
            "conditions": {"dead_letter": "writes to llm-usage.dlq failing; holding llm-usage/1"},
            "scrapes": 3,
            "messages_consumed": 70,
            "events_recorded": 54,
            "unscraped_events": 14,
            "web": {"tls": True, "basic_auth": False},
        },
        "partitions": [
            {
                "topic": "llm-usage",
                "partition": 0,
                "processed": 60,
                "recorded": 59,
                "covered": 50,
                "committable": 50,  # 50..57 recorded, not yet scraped
                "committed": 50,
                "lag": 12,
                "held_dead_letters": 0,
                "unscraped_events": 5,
                "paused": None,
            },
            {
                "topic": "llm-usage",
                "partition": 1,
                "processed": 10,
                "recorded": 10,
                "covered": -1,
                "committable": -1,
                "committed": -1,
                "lag": None,  # no statistics yet
                "held_dead_letters": 1,
                "unscraped_events": 9,
                "paused": "dead_letter",
            },
        ],
        "paused": [{"topic": "llm-usage", "partition": 1, "reason": "dead_letter"}],
        "dead_letters": {
            "topic": "llm-usage.dlq",
            "rejected": 4,
            "acknowledged": 1,
            "failed": 1,
            "by_reason": [
                {
                    "reason": "empty",
                    "rejected": 1,
                    "acknowledged": 0,
                    "failed": 1,
                    "examples": [
                        {
                            "topic": "llm-usage",
                            "partition": 1,
                            "offset": 7,
                            "at": "2001-09-09T01:46:41+00:00",
                            "detail": "detail of 7",
                            "value_prefix": "",
                            "value_bytes": -1,
                        }
                    ],
                },
                {
                    "reason": "invalid_json",
                    "rejected": 3,
                    "acknowledged": 1,
                    "failed": 0,
                    "examples": [
                        {"topic": "llm-usage", "partition": 1, "offset": n}
                        | example
                        | {"detail": f"detail of {n}"}
                        for n in range(3)
                    ],
                },
            ],
        },
        "unknown_fields": [
            {"field": "inputTokens", "events": 3, "known_as": "input_tokens"},
            {"field": "x_trace", "events": 1, "known_as": None},
        ],
        "keys": {"attribute_sets": 2, "on_several_partitions": 1},
        "cardinality": {
            "limit": 100,
            "age_seconds": 0.0,
            "metrics": [
                {
                    "metric": "llm_request_count_total",
                    "series": 101,
                    "overflow": True,
                    "expired": 4,
                },
                {
                    "metric": "llm_request_errors_total",
                    "series": 0,
                    "overflow": False,
                    "expired": 2,
                },
                {"metric": "llm_token_total", "series": 101, "overflow": True, "expired": 0},
                {
                    "metric": "llm_token_usage_input_total",
                    "series": 101,
                    "overflow": True,
                    "expired": 0,
                },
            ],
            "idle_ttl_seconds": 600.0,
            "expired": 6,
        },
        "settings": {
            "bootstrap_servers": "127.0.0.1:9092",
            "topic": "llm-usage",
            "group_id": "usage-group",
            "client_id": "worker-a",
            "commit_mode": "scrape",
            "group_protocol": "classic",
            "metrics_profile": "llm",
            "batch_size": 1000,
            "batch_wait_ms": 200,
            "max_message_bytes": 65536,
            "cardinality_limit": 100,
            "series_idle_ttl": 600.0,
            "unknown_fields": "ignore",
            "dlq_timeout_ms": 30000,
            "max_unscraped_events": 1000000,
            "max_unscraped_age_ms": 300000,
            "handover_timeout_ms": 30000,
            "statistics_interval_ms": 5000,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "metrics_port": 9464,
            "log_level": "INFO",
        },
        "links": {
            "metrics": "metrics",
            "status": "status",
            "healthz": "healthz",
            "readyz": "readyz",
        },
    }


def test_no_secret_reaches_the_page_or_the_json() -> None:
    sources, _, _, _ = _sources(_settings())
    status = build_status(sources)
    assert set(status["settings"]) == set(SHOWN_SETTINGS)
    for text in (json.dumps(status), render_html(status)):
        for secret in SECRETS:
            assert secret not in text


def test_recent_dead_letters_are_bounded_and_printable() -> None:
    recent = RecentDeadLetters()
    for offset in range(12):
        recent.rejected(_letter("t", 0, offset, b"x" * 300, Reason.SCHEMA_VIOLATION))
    big = b"\xff\xfe" + "é".encode() * 5_000_000  # 10 MB, not UTF-8 at the start
    recent.rejected(_letter("t", 2, 99, big, Reason.TOO_LARGE))
    odd_value = "a\x00b\x1b[31mc\u202ed".encode()  # NUL, an escape sequence, a bidi override
    recent.rejected(_letter("t", 0, 100, odd_value, Reason.INVALID_JSON))
    snapshot = recent.snapshot()
    assert list(snapshot) == ["invalid_json", "schema_violation", "too_large"]
    violations = snapshot["schema_violation"]
    assert violations.rejected == 12
    assert [e.offset for e in violations.examples] == [7, 8, 9, 10, 11]  # the last five
    assert {e.value_prefix for e in violations.examples} == {"x" * 200}
    assert {e.value_bytes for e in violations.examples} == {300}
    (large,) = snapshot["too_large"].examples
    assert large.value_prefix == "\ufffd\ufffd" + "é" * 198
    assert large.value_bytes == len(big)
    (odd,) = snapshot["invalid_json"].examples
    assert odd.value_prefix == "a\\x00b\\x1b[31mc\\u202ed"


def test_series_counts_are_collected_at_most_every_five_seconds() -> None:
    registry = CollectorRegistry(auto_describe=True)
    provider = build_meter_provider(registry, 100)
    tracker = TokenTracker(provider.get_meter(METER_NAME), remembered_sets=100)
    tracker.record_batch([UsageOptions(provider="p", model="a", status="error")])
    counts = SeriesCounts(registry)
    first = {
        "limit": 100,
        "metrics": [
            {"metric": "llm_request_count_total", "series": 1, "overflow": False},
            {"metric": "llm_request_errors_total", "series": 1, "overflow": False},
        ],
    }
    assert counts.read(1000.0) == first | {"age_seconds": 0.0}
    tracker.record_batch([UsageOptions(provider="p", model="b", status="success")])
    # The last collect is recent enough.
    assert counts.read(1004.5) == first | {"age_seconds": 4.5}
    assert counts.read(1005.0)["metrics"][0] == {
        "metric": "llm_request_count_total",
        "series": 2,
        "overflow": False,
    }


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


PAGE_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "code", "span", "a",
    "dl", "dt", "dd", "table", "thead", "tbody", "tr", "th", "td", "small",
}  # fmt: skip


def test_every_value_on_the_page_is_escaped() -> None:
    hostile_settings = _settings(group_id=HOSTILE[0], client_id=HOSTILE[1], topic=HOSTILE[2])
    sources, _, _, _ = _sources(hostile_settings)
    for n, value in enumerate(HOSTILE):
        letter = _letter(HOSTILE[3], n, n, value.encode(), Reason.SCHEMA_VIOLATION)
        sources.dead_letters.rejected(letter)
    page = render_html(build_status(sources))
    parsed = _Elements()
    parsed.feed(page)
    assert parsed.tags == PAGE_TAGS  # no script, img, b, i: nothing the values brought
    assert parsed.attributes == {"lang", "charset", "name", "content", "id", "class", "href"}
    text = "".join(parsed.text)
    for value in HOSTILE:
        assert value in text  # shown as text, character for character
    assert page.count("<script") == 0
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page


@pytest.fixture
def page_server() -> Iterator[tuple[MetricsServer, StatusSources]]:
    sources, _, _, registry = _sources(_settings())
    server = MetricsServer("127.0.0.1", 0, registry, sources.health, status=StatusPage(sources))
    server.start()
    try:
        yield server, sources
    finally:
        server.stop()


def test_served_page_and_json_with_their_headers(
    page_server: tuple[MetricsServer, StatusSources],
) -> None:
    server, sources = page_server
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    try:
        _check_page_and_json(conn, sources)
    finally:
        conn.close()


def _check_page_and_json(conn: http.client.HTTPConnection, sources: StatusSources) -> None:
    conn.request("GET", "/status")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    served = json.loads(response.read())
    expected = build_status(sources)
    for status in (served, expected):
        _drop_ages(status)
        del status["generated_at"], status["worker"]["uptime_seconds"]
        del status["cardinality"]["age_seconds"]  # the second read comes from the cache
    assert served == expected
    conn.request("GET", "/")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert response.getheader("Content-Security-Policy", "").startswith("default-src 'none';")
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert b"<h1>usage-consumer usage-group / llm-usage</h1>" in response.read()
    conn.request("GET", "/nothing-here")
    response = conn.getresponse()
    assert response.status == 404
    response.read()


# --- a real worker, a real browser ----------------------------------------------------------

# (value, reason); each goes to a partition of its own choosing between valid events.
INVALID: list[tuple[bytes, str]] = [
    (HOSTILE[0].encode(), "invalid_json"),
    (HOSTILE[1].encode(), "invalid_json"),
    (HOSTILE[3].encode(), "invalid_json"),
    (
        json.dumps(
            {
                "schema_version": 1,
                "event_id": HOSTILE[1],
                "occurred_at": "2026-01-01T00:00:00Z",
                "provider": HOSTILE[0],
                "model": HOSTILE[2],
                "status": HOSTILE[2],
            },
            ensure_ascii=False,
        ).encode(),
        "schema_violation",
    ),
    (b'["<svg onload=alert(1)>"]', "not_an_object"),
    (b"", "empty"),
]


def _produce(
    bootstrap: str, topic: str, events: list[dict[str, Any]]
) -> tuple[dict[int, int], dict[int, int], list[Any]]:
    """90 valid events over three partitions and the invalid ones on partitions 0 and 1.
    Returns, per partition, the end offset and the offset after the last valid event, and the
    invalid messages as placed (partition, offset, value, reason)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    ends: dict[int, int] = {}
    valid_ends: dict[int, int] = {}
    placed: list[Any] = []

    def on_delivery(value: bytes, reason: str | None) -> Any:
        def report(err: Any, msg: Message) -> None:
            assert err is None, err
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None
            assert offset is not None
            ends[partition] = max(ends.get(partition, 0), offset + 1)
            if reason is None:
                valid_ends[partition] = max(valid_ends.get(partition, 0), offset + 1)
            else:
                placed.append((partition, offset, value, reason))

        return report

    bad = iter(INVALID)
    for n, event in enumerate(events):
        value = json.dumps(event).encode()
        producer.produce(topic, value, partition=n % 3, on_delivery=on_delivery(value, None))
        if n % 10 == 5 and (item := next(bad, None)) is not None:
            producer.produce(
                topic, item[0], partition=(n // 10) % 2, on_delivery=on_delivery(item[0], item[1])
            )
        producer.poll(0)
    assert producer.flush(30) == 0
    assert len(placed) == len(INVALID)
    return ends, valid_ends, sorted(placed)


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


@pytest.mark.integration
def test_the_page_of_a_real_worker_in_a_real_browser(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium not found: `make chromium` installs it (Debian's chromium)")
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only this test needs it

    for value, reason in INVALID:  # the oracle agrees with the expected reasons
        verdict = decode(value, 65_536)
        assert isinstance(verdict, Rejection), value
        assert verdict.reason == reason, value

    topic = topic_factory(3)
    worker = WorkerProcess(
        kafka_bootstrap, topic, group_id, tmp_path, "--batch-size", "64", "--batch-wait-ms", "50"
    ).start()
    worker.wait_ready()
    events = list(synthetic_events(90, seed=5))
    ends, valid_ends, placed = _produce(kafka_bootstrap, topic, events)

    # What the series counts must come to (the oracle's series, one per label set).
    series: dict[str, int] = {}
    for name, _ in expected_series(events):
        if not name.endswith("_sum"):
            metric = name.removesuffix("_count")
            series[metric] = series.get(metric, 0) + 1

    def settled() -> bool:
        worker.scrape()  # each scrape covers what was processed: the commits follow
        status = _get_json(worker.url + "/status")
        return (
            [
                (p["partition"], p["processed"], p["covered"], p["committed"], p["lag"])
                for p in status["partitions"]
            ]
            == [(n, ends[n], ends[n], ends[n], 0) for n in range(3)]
            and status["dead_letters"]["acknowledged"] == len(INVALID)
            # counted at most 5 s ago: it may take that long to catch up
            and {m["metric"]: m["series"] for m in status["cardinality"]["metrics"]} == series
        )

    worker.wait_for(settled, 60, "settled")
    status = _get_json(worker.url + "/status")

    dialogs: list[str] = []
    console: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
            response = page.goto(worker.url + "/")
            assert response is not None
            assert response.status == 200
            page.wait_for_timeout(300)  # an onerror handler would have fired by now

            # Nothing ran and nothing was injected.
            assert dialogs == []
            assert console == []
            for selector in ("script", "img", "svg", "b", "i", "[onerror]", "[onload]"):
                assert page.locator(selector).count() == 0, selector

            assert page.title() == f"usage-consumer {group_id} / {topic}"
            assert page.inner_text("#member-id") == status["worker"]["member_id"] != ""
            assert status["worker"]["member_id"].startswith("usage-consumer-")
            assert page.inner_text("#readiness") == "ok: 3 partitions assigned"

            rows = page.locator("table.partitions tbody tr")
            cells = [rows.nth(n).locator("td").all_inner_texts() for n in range(rows.count())]
            assert cells == [
                [
                    f"{topic}/{n}",
                    str(ends[n]),
                    str(valid_ends[n]),
                    str(ends[n]),
                    str(ends[n]),
                    str(ends[n]),
                    "0",
                    "0",
                    "0",
                    "—",
                ]
                for n in range(3)
            ]
            assert cells == [  # the JSON says the same
                [
                    f"{p['topic']}/{p['partition']}",
                    *(
                        str(p[k])
                        for k in (
                            "processed",
                            "recorded",
                            "covered",
                            "committable",
                            "committed",
                            "lag",
                            "held_dead_letters",
                            "unscraped_events",
                        )
                    ),
                    "—",
                ]
                for p in status["partitions"]
            ]

            by_reason: dict[str, int] = {}
            for _, _, _, reason in placed:
                by_reason[reason] = by_reason.get(reason, 0) + 1
            dead = page.locator("table.dead-letters tbody tr")
            dead_cells = [dead.nth(n).locator("td").all_inner_texts() for n in range(dead.count())]
            assert dead_cells == [
                *([r, str(c), str(c), "0"] for r, c in sorted(by_reason.items())),
                ["total", str(len(INVALID)), str(len(INVALID)), "0"],
            ]
            assert dead_cells[:-1] == [
                [r["reason"], str(r["rejected"]), str(r["acknowledged"]), str(r["failed"])]
                for r in status["dead_letters"]["by_reason"]
            ]

            # Each hostile value is on the page as text, exactly, at its source position.
            examples = page.locator("table.examples tbody tr")
            shown = sorted(
                (
                    examples.nth(n).locator("td").nth(0).inner_text(),
                    examples.nth(n).locator(".value").inner_text(),
                )
                for n in range(examples.count())
            )
            assert shown == sorted(
                (f"{topic}/{p}@{o}", v.decode()[:EXAMPLE_VALUE_CHARS]) for p, o, v, _ in placed
            )
            assert any(len(v) > EXAMPLE_VALUE_CHARS for _, _, v, _ in placed)  # one was cut

            cardinality = page.locator("table.cardinality tbody tr")
            assert [
                cardinality.nth(n).locator("td").all_inner_texts()
                for n in range(cardinality.count())
            ] == [
                [m["metric"], str(m["series"]), "no", str(m["expired"])]
                for m in status["cardinality"]["metrics"]
            ]
            assert len(series) == 8  # every usage metric has series
            assert page.get_attribute("a[href=metrics]", "href") == "metrics"

            shot = tmp_path / "status-page.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)
    print(f"status page screenshot: {SCREENSHOT} (and {shot})")
    started = time.monotonic()
    assert worker.stop() == 0
    assert time.monotonic() - started < 30
