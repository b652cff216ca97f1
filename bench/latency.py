"""End-to-end latency: produced to visible on /metrics, at a steady rate.

Method. A fresh worker (as shipped, scrape mode) consumes a fresh topic. The producer publishes
`rate` events per second in 100 ms ticks of realistic synthetic events; the last event of every
tick is a *marker*: a fixed attribute set whose `scenario` is `bench-marker-<k>`, k = tick mod
50, so only 50 extra attribute sets ever exist. A scraper GETs /metrics every 50 ms (or right
after the previous scrape, when one takes longer) and sums `llm_request_count_total` per marker
value; when marker k's count reaches c, ticks k, k+50, ..., k+50(c-1) are visible. A tick's
latency is the time its marker's count was first seen to include it (the scrape's response fully
read) minus the time its marker was handed to the producer. Markers of one k are 5 s apart, far
more than the latencies measured, so counts cannot be credited to the wrong tick. The first
`warmup` seconds are left out (series being created, caches warming).

What the figure includes: the producer's linger (20 ms) and acks=all write, the fetch, the
worker's batching (a batch closes at 1,000 messages or 200 ms), validating and recording, and
the wait for the next scrape plus that scrape's own duration (its resolution: the scrapes'
median duration is reported alongside).
"""

from __future__ import annotations

import gc
import json
import math
import statistics
import threading
import time
import urllib.request
import uuid
from typing import Any

from bench.procs import Measured, wait_ready
from consumer.devtools.produce import Publisher, synthetic_events

MARKERS = 50
MARKER_NEEDLE = b'llm_scenario="bench-marker-'
COUNT_LINE = b"llm_request_count_total{"


def marker_event(tick: int) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": f"marker-{tick}-{uuid.uuid4().hex[:8]}",
        "occurred_at": "2025-01-01T00:00:00.000+00:00",
        "provider": "openai",
        "model": "gpt-4o",
        "scenario": f"bench-marker-{tick % MARKERS:02d}",
        "status": "success",
        "input_tokens": 100,
        "output_tokens": 10,
        "latency_ms": 500,
    }


def marker_counts(body: bytes) -> dict[int, float]:
    """Sum of llm_request_count_total per marker, found without parsing the whole exposition."""
    counts: dict[int, float] = {}
    pos = body.find(MARKER_NEEDLE)
    while pos >= 0:
        line_start = body.rfind(b"\n", 0, pos) + 1
        line_end = body.find(b"\n", pos)
        line_end = len(body) if line_end < 0 else line_end
        if body.startswith(COUNT_LINE, line_start):
            digits = body[pos + len(MARKER_NEEDLE) : body.find(b'"', pos + len(MARKER_NEEDLE))]
            value = float(body[body.rfind(b" ", line_start, line_end) + 1 : line_end])
            counts[int(digits)] = counts.get(int(digits), 0.0) + value
        pos = body.find(MARKER_NEEDLE, line_end)
    return counts


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class MarkerScraper(threading.Thread):
    def __init__(self, url: str, every: float) -> None:
        super().__init__(name="latency-scraper", daemon=True)
        self.url, self.every = url, every
        self.seen_at: dict[int, float] = {}
        self.durations: list[float] = []
        self.sizes: list[int] = []
        self._credited = [0] * MARKERS
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            began = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=60) as resp:  # noqa: S310
                    body = resp.read()
            except OSError:
                time.sleep(self.every)
                continue
            seen = time.time()
            self.durations.append(time.monotonic() - began)
            self.sizes.append(len(body))
            for k, count in marker_counts(body).items():
                while self._credited[k] < count:
                    self.seen_at[k + MARKERS * self._credited[k]] = seen
                    self._credited[k] += 1
            self.halt.wait(max(0.0, began + self.every - time.monotonic()))


def run_latency(
    worker: Measured,
    url: str,
    bootstrap: str,
    topic: str,
    *,
    rate: float,
    seconds: float,
    warmup: float,
    tick_s: float = 0.1,
    scrape_every: float = 0.05,
) -> dict[str, Any]:
    """`worker` is spawned (not necessarily ready yet) and serves on `url`."""
    wait_ready([url], [worker], timeout=120)
    per_tick = round(rate * tick_s)
    ticks = round(seconds / tick_s)
    # Serialized up front so the producer loop does nothing but produce.
    source = synthetic_events(per_tick * ticks, seed=5)
    payloads = []
    for _ in range(ticks):
        batch = []
        for _ in range(per_tick - 1):
            e = next(source)
            batch.append((json.dumps(e).encode(), e["event_id"].encode()))
        payloads.append(batch)

    scraper = MarkerScraper(url + "/metrics", scrape_every)
    scraper.start()
    publisher = Publisher({"bootstrap.servers": bootstrap}, topic)
    produced_at: dict[int, float] = {}
    began = time.monotonic() + 0.2
    for tick, batch in enumerate(payloads):
        delay = began + tick * tick_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for value, key in batch:
            publisher.send(value, key)
        marker = marker_event(tick)
        produced_at[tick] = time.time()
        publisher.send(json.dumps(marker).encode(), marker["event_id"].encode())
    produce_s = time.monotonic() - began
    publisher.flush()
    failures = len(publisher.failed)
    del publisher  # destroy the producer now, not after the broker has stopped
    gc.collect()
    deadline = time.monotonic() + 30
    while len(scraper.seen_at) < ticks and time.monotonic() < deadline:
        time.sleep(0.1)
    scraper.halt.set()
    scraper.join(timeout=60)

    first = math.ceil(warmup / tick_s)
    latencies = [
        scraper.seen_at[t] - produced_at[t] for t in range(first, ticks) if t in scraper.seen_at
    ]
    missing = sum(1 for t in range(first, ticks) if t not in scraper.seen_at)
    return {
        "rate_target": rate,
        "rate_achieved": per_tick * ticks / produce_s if produce_s > 0 else 0.0,
        "seconds": seconds,
        "warmup_s": warmup,
        "tick_s": tick_s,
        "samples": len(latencies),
        "missing": missing,
        "delivery_failures": failures,
        "p50_s": percentile(latencies, 50) if latencies else None,
        "p99_s": percentile(latencies, 99) if latencies else None,
        "max_s": max(latencies) if latencies else None,
        "scrape_every_s": scrape_every,
        "scrapes": len(scraper.durations),
        "scrape_median_s": statistics.median(scraper.durations) if scraper.durations else None,
        "scrape_body_bytes_last": scraper.sizes[-1] if scraper.sizes else 0,
        # Per tick after the warm-up, in order: shows whether latency drifts during the test.
        "latencies_s": [round(v, 4) for v in latencies],
    }
