"""`usage-consumer demo` (what `make run` runs): a local broker, a demo producer, the worker,
and a monitor that scrapes it every 2 s (so offsets advance, as with Prometheus) and prints one
summary line. A development tool: nothing of the shipped pipeline depends on it.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from consumer.app import run_worker, stop_on_signals
from consumer.devtools import broker
from consumer.devtools.produce import Publisher, synthetic_events
from consumer.kafka.topics import ensure_topics
from consumer.keys.attributes import attribute_key
from consumer.logs import KAFKA_LOGGER
from consumer.settings import load_settings

__all__ = ["run_demo"]


def run_demo(data_dir: Path, port: int | None, rate: float, overrides: dict[str, Any]) -> int:
    """Start the local broker (unless it runs), its topics, the producer, the monitor and the
    worker; on the way out, stop what was started."""
    was_running = broker.broker_status(data_dir) is not None
    print("starting the local Kafka broker (the first run downloads its jars)...", flush=True)
    info = broker.start_broker(data_dir, port)
    stop = threading.Event()
    monitor_stop = threading.Event()
    stop_on_signals(stop)
    try:
        settings = load_settings(
            {
                # Nobody else scrapes the demo: its monitor does, every 2 s.
                "handover_timeout_ms": 5000,
                **overrides,
                "bootstrap_servers": info.bootstrap,
            }
        )
        ensure_topics(info.bootstrap, [settings.topic, settings.dead_letter_topic], partitions=6)
        # Where this run starts: the summary counts only what this run commits.
        baseline = _starting_positions(info.bootstrap, settings.group_id, settings.topic)
        producer = threading.Thread(
            target=_demo_producer,
            args=(info.bootstrap, settings.topic, rate, stop),
            name="demo-producer",
            daemon=True,
        )
        producer.start()
        host = "127.0.0.1" if settings.metrics_host in ("0.0.0.0", "") else settings.metrics_host
        monitor = threading.Thread(
            target=_demo_monitor,
            # Its own stop: it must keep scraping while the worker hands over on Ctrl-C.
            args=(f"http://{host}:{settings.metrics_port}/metrics", baseline, monitor_stop),
            name="demo-monitor",
            daemon=True,
        )
        monitor.start()
        print(
            f"\nbroker   {info.bootstrap}\ntopic    {settings.topic} "
            f"({rate:g} demo events/s, ~1% invalid -> {settings.dead_letter_topic})\n"
            f"metrics  http://{host}:{settings.metrics_port}/metrics\n"
            "Ctrl-C stops everything this started.\n",
            flush=True,
        )
        return run_worker(settings, stop)
    finally:
        stop.set()
        monitor_stop.set()
        print(flush=True)
        if not was_running:
            broker.stop_broker(data_dir)
            print("local broker stopped", flush=True)


def _demo_producer(bootstrap: str, topic: str, rate: float, stop: threading.Event) -> None:
    """Synthetic events at `rate` per second; every hundredth one is invalid, for the DLQ."""
    publisher = Publisher(
        {"bootstrap.servers": bootstrap, "logger": logging.getLogger(KAFKA_LOGGER)}, topic
    )
    sent = 0
    for seed in itertools.count():
        for event in synthetic_events(1000, seed):
            if stop.wait(1 / rate if rate > 0 else 1):
                publisher.flush(5)
                return
            sent += 1
            if sent % 100 == 0:
                publisher.send(b'{"schema_version": 1, "provider": "broken-gateway"}')
            else:
                publisher.send(json.dumps(event).encode(), key=attribute_key(event))


def _starting_positions(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Per partition, where the group resumes: its committed offset, or the log's start (the
    worker reads from the earliest offset when the group has none)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "logger": logging.getLogger(KAFKA_LOGGER),
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        wanted = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        committed = consumer.committed(wanted, timeout=10)
        out = {}
        for tp in committed:
            if tp.offset >= 0:
                out[tp.partition] = tp.offset
            else:
                low, _high = consumer.get_watermark_offsets(tp, timeout=10)
                out[tp.partition] = max(low, 0)
        return out
    finally:
        consumer.close()


def committed_this_run(committed: dict[int, float], baseline: dict[int, int]) -> int:
    """Offsets committed since the run started, summed over partitions; a partition with no
    commit yet (-1) counts 0."""
    return sum(
        max(0, int(offset) - baseline.get(partition, 0))
        for partition, offset in committed.items()
        if offset >= 0
    )


def _demo_monitor(url: str, baseline: dict[int, int], stop: threading.Event) -> None:
    """Scrape the demo worker like Prometheus would (so its offsets advance), one line a time."""
    tty = sys.stdout.isatty()
    last: tuple[float, float] | None = None
    commits, committed_at = 0.0, 0.0
    while not stop.wait(2.0):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own URL
                text = response.read().decode()
        except OSError:
            continue
        values: dict[str, float] = {}
        committed: dict[int, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
                if sample.name == "usage_consumer_partition_committed_offset":
                    committed[int(sample.labels["partition"])] = sample.value
        consumed = values.get("usage_consumer_messages_consumed_total", 0.0)
        now = time.monotonic()
        rate = (consumed - last[1]) / (now - last[0]) if last else 0.0
        last = (now, consumed)
        if values.get("usage_consumer_commits_total", 0.0) != commits:
            commits, committed_at = values["usage_consumer_commits_total"], now
        since = f"{now - committed_at:.0f}s ago" if committed_at else "none yet"
        line = (
            f"{rate:6.1f} events/s"
            f" | recorded {values.get('usage_consumer_events_recorded_total', 0):.0f}"
            f" | dead letters {values.get('usage_consumer_dead_letters_total', 0):.0f}"
            f" | lag {values.get('usage_consumer_consumer_lag', 0):.0f}"
            f" | committed {committed_this_run(committed, baseline)}"
            f" (last commit {since})"
            f" | input tokens {values.get('llm_token_usage_input_total', 0):.0f}"
        )
        print("\r\033[K" + line if tty else line, end="" if tty else "\n", flush=True)
