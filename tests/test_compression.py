"""Compressed scrapes: /metrics honours Accept-Encoding gzip, streaming, and says so in a counter.

A real MetricsServer on a loopback port, a registry built as the worker builds it (usage metrics
through the tracker, the worker's own metrics), real HTTP clients. The compressed body must be
the identity body byte for byte once decompressed; the TLS and basic-auth variant is in
tests/test_web_config.py.
"""

from __future__ import annotations

import gzip
import http.client
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from consumer.exposition.self_metrics import WorkerMetrics
from consumer.pipeline.commit import ScrapeAcknowledger
from consumer.pipeline.health import HealthState
from consumer.pipeline.ledger import OffsetLedger
from consumer.usage.options import UsageOptions
from consumer.usage.profiles import build_trackers
from consumer.usage.provider import build_meter_provider
from consumer.web.server import MetricsServer, accepts_gzip, gzip_chunks

# The lines that change from one scrape to the next: the scrape counters themselves (and the
# `_created` family a labelled counter gets with its first sample).
_SCRAPE_COUNTERS = re.compile(rb"^.*usage_consumer_scrape(s|_responses)_.*\n", re.M)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),  # what Prometheus and browsers send
        ("GZIP", True),
        ("x-gzip", True),
        ("*", True),
        ("gzip;q=0.5", True),
        ("gzip; q=0", False),
        ("gzip;q=0.0, identity", False),
        ("*;q=0, gzip;q=1", True),
        ("gzip;q=0, *", False),  # an explicit refusal wins over the wildcard
        ("deflate", False),
        ("identity", False),
        ("", False),
        ("gzip;q=x", False),  # an unreadable weight is no consent
    ],
)
def test_accept_encoding_is_read_as_rfc_9110_says(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_gzip_chunks_are_one_gzip_stream_of_the_whole_text() -> None:
    chunks = ["héllo ", "", "wörld\n" * 1000]
    compressed = list(gzip_chunks(iter(chunks)))
    assert all(isinstance(part, bytes) for part in compressed)
    assert gzip.decompress(b"".join(compressed)) == "".join(chunks).encode("utf-8")
    assert len(b"".join(compressed)) < 200


@dataclass
class Served:
    port: int
    metrics: WorkerMetrics
    registry: CollectorRegistry


@pytest.fixture
def served() -> Iterator[Served]:
    registry = CollectorRegistry(auto_describe=True)
    provider = build_meter_provider(registry, 10_000)
    (tracker,) = build_trackers("llm", provider.get_meter("t"), 10_000)
    tracker.record_batch(
        [
            UsageOptions(
                provider=f"provider-{i % 7}",
                model=f"model-{i % 50}",
                status="success",
                input_tokens=i,
                output_tokens=2 * i,
                latency_ms=10 * i,
            )
            for i in range(1, 400)
        ]
    )
    metrics = WorkerMetrics.create(registry)
    ledger = OffsetLedger("scrape")
    server = MetricsServer(
        "127.0.0.1",
        0,
        registry,
        HealthState(),
        ScrapeAcknowledger(ledger, metrics),
        responses=metrics.scrape_responses,
    )
    server.start()
    try:
        yield Served(server.address[1], metrics, registry)
    finally:
        server.stop()
        provider.shutdown()


def _get(
    port: int, headers: dict[str, str], http10: bool = False
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    if http10:
        conn._http_vsn, conn._http_vsn_str = 10, "HTTP/1.0"  # type: ignore[attr-defined]
    try:
        conn.request("GET", "/metrics", headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _stable(body: bytes) -> bytes:
    return _SCRAPE_COUNTERS.sub(b"", body)


def _responses(served: Served, encoding: str) -> float | None:
    return served.registry.get_sample_value(
        "usage_consumer_scrape_responses_total", {"encoding": encoding}
    )


def test_prometheus_gets_the_text_gzip_compressed_as_it_is_written(served: Served) -> None:
    status, plain_headers, plain = _get(served.port, {})
    assert status == 200
    assert "Content-Encoding" not in plain_headers
    status, headers, body = _get(
        served.port,
        {
            "Accept-Encoding": "gzip",
            "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.4,*/*;q=0.1",
        },
    )
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Transfer-Encoding"] == "chunked"
    assert headers["Vary"] == "Accept-Encoding"
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = gzip.decompress(body)
    assert _stable(text) == _stable(plain)
    assert b"llm_token_usage_input_total{" in text
    assert len(body) * 8 <= len(plain), (len(body), len(plain))
    assert (_responses(served, "gzip"), _responses(served, "identity")) == (1.0, 1.0)
    assert served.registry.get_sample_value("usage_consumer_scrapes_total") == 2.0


def test_openmetrics_and_http_1_0_are_compressed_whole(served: Served) -> None:
    _, _, plain_om = _get(served.port, {"Accept": "application/openmetrics-text"})
    _, headers, body = _get(
        served.port, {"Accept": "application/openmetrics-text", "Accept-Encoding": "gzip"}
    )
    assert headers["Content-Encoding"] == "gzip"
    assert int(headers["Content-Length"]) == len(body)
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert _stable(gzip.decompress(body)) == _stable(plain_om)
    assert gzip.decompress(body).endswith(b"# EOF\n")

    _, plain_headers, plain = _get(served.port, {}, http10=True)
    _, headers, body = _get(served.port, {"Accept-Encoding": "gzip"}, http10=True)
    assert "Transfer-Encoding" not in headers
    assert int(headers["Content-Length"]) == len(body)
    assert int(plain_headers["Content-Length"]) == len(plain)
    assert _stable(gzip.decompress(body)) == _stable(plain)
    assert (_responses(served, "gzip"), _responses(served, "identity")) == (2.0, 2.0)


@pytest.mark.parametrize("header", ["identity", "gzip;q=0", "deflate"])
def test_no_gzip_unless_accepted(served: Served, header: str) -> None:
    _, headers, body = _get(served.port, {"Accept-Encoding": header})
    assert "Content-Encoding" not in headers
    assert body.startswith(b"# HELP ")
    assert _responses(served, "identity") == 1.0
    assert _responses(served, "gzip") is None
