"""Fault-suite harness: a known stream, workers that die, and a scraper that remembers.

Ground truth is what Prometheus would have: for every worker incarnation (one process), the last
values a scraper read from it. Summed over incarnations they must equal, series by series, the
totals of the events the broker acknowledged. A shortfall is *lost* (must be 0); an excess is
*duplicated* (measured and reported).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from consumer.devtools.produce import synthetic_events
from tests.harness import Series, WorkerProcess, expected_series, usage_series

# Classic groups tuned for fast failure detection on one machine: a killed member leaves the
# group in seconds. (KIP-848 groups take these from the broker, see consumer.devtools.broker.)
FAST_CLASSIC_GROUP = (
    "--kafka-option",
    "session.timeout.ms=3000",
    "--kafka-option",
    "heartbeat.interval.ms=500",
)
# For clean hand-overs: sessions long enough that a loaded machine never drops a member that
# is busy handing over (librdkafka's default is 45 s).
CLASSIC_GROUP = (
    "--kafka-option",
    "session.timeout.ms=10000",
    "--kafka-option",
    "heartbeat.interval.ms=1000",
)


class StreamProducer(threading.Thread):
    """Publishes synthetic events at a steady rate; keeps those the broker acknowledged."""

    def __init__(self, bootstrap: str, topic: str, count: int, rate: float, seed: int) -> None:
        super().__init__(name="stream-producer", daemon=True)
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 10,
                # Rides out a broker outage: messages wait and are retried, not failed.
                "message.timeout.ms": 180_000,
            }
        )
        self._topic = topic
        self._count = count
        self._rate = rate
        self._seed = seed
        self.delivered: list[dict[str, Any]] = []
        self.failed = 0
        self.extra: list[tuple[bytes, str]] = []  # (value, reason) of invalid messages to mix in
        self.invalid_delivered = 0
        self.done_at = 0.0

    def run(self) -> None:
        start = time.monotonic()
        bad = iter(self.extra)
        for n, event in enumerate(synthetic_events(self._count, self._seed)):
            delay = start + n / self._rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._send(json.dumps(event).encode(), event)
            if self.extra and n % 50 == 25:
                item = next(bad, None)
                if item is not None:
                    self._send(item[0], None)
        while self._producer.flush(1.0):
            pass
        self.done_at = time.monotonic()

    def _send(self, value: bytes, event: dict[str, Any] | None) -> None:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self.failed += 1
            elif event is not None:
                self.delivered.append(event)
            else:
                self.invalid_delivered += 1

        while True:
            try:
                self._producer.produce(self._topic, value, on_delivery=on_delivery)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)


@dataclass
class Incarnation:
    worker: WorkerProcess
    last: Series = field(default_factory=dict)
    scrapes: int = 0


class Scraper(threading.Thread):
    """Scrapes every live incarnation like Prometheus, remembering each one's last values."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(name="scraper", daemon=True)
        self.interval = interval
        self.incarnations: list[Incarnation] = []
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self.enabled = threading.Event()
        self.enabled.set()

    def watch(self, worker: WorkerProcess) -> WorkerProcess:
        with self._lock:
            self.incarnations.append(Incarnation(worker))
        return worker

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            if self.enabled.is_set():
                self.scrape_all()

    def scrape_all(self) -> None:
        with self._lock:
            live = list(self.incarnations)
        for inc in live:
            proc = inc.worker.proc
            if proc is None or proc.poll() is not None:
                continue
            try:
                series = inc.worker.scrape()
            except (OSError, AssertionError, http.client.HTTPException, ValueError):
                # Not serving yet, or killed mid-response (a truncated body): a failed scrape,
                # as Prometheus would have it; the incarnation keeps its last complete values.
                continue
            inc.last = usage_series(series) | {
                k: v for k, v in series.items() if k[0].startswith("usage_consumer_")
            }
            inc.scrapes += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def combined(self) -> Series:
        """Sum over incarnations of their last scraped usage values."""
        out: dict[Any, float] = defaultdict(float)
        with self._lock:
            for inc in self.incarnations:
                for key, value in usage_series(inc.last).items():
                    out[key] += value
        return dict(out)


@dataclass
class Outcome:
    scenario: str
    produced: int
    lost: int  # events missing from the scraped totals (llm_request_count_total)
    duplicated: int  # events counted more than once
    lost_series: int  # series of any metric below its expected value
    recovery_s: float  # from the end of the last fault to every event visible in a scrape
    incarnations: int
    notes: str = ""


def compare(expected: Series, got: Series) -> tuple[int, int, int]:
    """(lost events, duplicated events, series below expectation) of scraped vs expected."""
    lost = dup = 0
    lost_series = 0
    for key in expected.keys() | got.keys():
        want, have = expected.get(key, 0.0), got.get(key, 0.0)
        if have < want - 1e-6:
            lost_series += 1
        if key[0] == "llm_request_count_total":
            lost += int(max(0.0, want - have))
            dup += int(max(0.0, have - want))
    return lost, dup, lost_series


def wait_until(condition: Any, timeout: float, what: str, poll: float = 0.25) -> float:
    """Wait for `condition`; returns the seconds it took. Raises AssertionError on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def write_report(outcomes: list[Outcome], path: Path, header: str) -> None:
    """Figures as JSON plus a Markdown table, side by side."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps([asdict(o) for o in outcomes], indent=2) + "\n")
    lines = [
        header,
        "",
        "| scenario | produced | lost | duplicated | recovery (s) | incarnations | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {o.scenario} | {o.produced} | {o.lost} | {o.duplicated} | {o.recovery_s:.1f} "
        f"| {o.incarnations} | {o.notes} |"
        for o in outcomes
    ]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def expected_from(producer: StreamProducer) -> Series:
    return expected_series(producer.delivered)
