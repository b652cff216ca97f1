"""`usage-consumer`: the command line. It parses, wires the stages together, and runs them.

usage-consumer run                      the worker
usage-consumer demo                     local broker + demo producer + worker (`make run`)
usage-consumer broker start|stop        the embedded single-node Kafka broker
usage-consumer produce                  synthetic events, or a .jsonl file verbatim
usage-consumer validate F.jsonl         check events offline
usage-consumer schema                   print the event JSON Schema
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from consumer import broker, logs, replay
from consumer.commit import Committer, LedgerCollector, OffsetLedger, ScrapeAcknowledger
from consumer.deadletter import DeadLetterSink
from consumer.errors import ConfigError, UsageConsumerError
from consumer.metrics import WorkerMetrics
from consumer.produce import Publisher, synthetic_events
from consumer.record import METER_NAME, Recorder, build_meter_provider
from consumer.refusals import ClientIdentity
from consumer.serve import HealthState, MetricsServer
from consumer.settings import ENV_PREFIX, Settings, load_settings
from consumer.source import KafkaSource
from consumer.status import Membership, SeriesCounts, StatusPage, StatusSources
from consumer.tracker import TokenTracker
from consumer.validate import Rejection, decode
from consumer.webconfig import load_web_config
from consumer.worker import Backpressure, Rebalancer, Worker
from schemas import json_schema_text
from schemas.usage_event import parse_rfc3339

__all__ = ["main", "run_worker"]

log = logging.getLogger("consumer")

DEFAULT_DATA_DIR = Path(".local/kafka")

_COMMIT_MODES = {
    "scrape": "offsets advance only when a /metrics response covered the events; "
    "without a scraper nothing is committed",
    "record": "offsets advance once events are recorded; a crash loses what no scrape saw",
}


def run_worker(settings: Settings, stop: threading.Event) -> int:
    """Build every stage from the settings, serve /metrics, and run until `stop` is set."""
    # First: a bad web configuration must stop start-up before anything joins the group.
    web = load_web_config(settings.web_config_file) if settings.web_config_file else None
    registry = CollectorRegistry(auto_describe=True)
    meter_provider = build_meter_provider(registry, settings.cardinality_limit)
    tracker = TokenTracker(
        meter_provider.get_meter(METER_NAME), remembered_sets=settings.cardinality_limit
    )
    metrics = WorkerMetrics.create(registry)
    health = HealthState()
    ledger = OffsetLedger(settings.commit_mode)
    registry.register(LedgerCollector(ledger))
    committer = Committer(ledger, metrics)

    dead_letters = DeadLetterSink(
        Producer(settings.producer_config()),
        settings.dead_letter_topic,
        ledger,
        metrics,
        identity=ClientIdentity.of(
            settings.producer_config(), settings.topic, settings.dead_letter_topic
        ),
    )
    rebalancer = Rebalancer(
        ledger,
        committer,
        dead_letters,
        metrics,
        health,
        handover_timeout_s=settings.handover_timeout_ms / 1000,
    )

    def on_lag(lag: dict[tuple[str, int], int]) -> None:
        for (topic, partition), value in lag.items():
            metrics.consumer_lag.labels(topic, str(partition)).set(value)

    membership = Membership(rebalancer)
    source = KafkaSource(settings.consumer_config(), settings.topic, membership, on_lag)
    status = StatusPage(
        StatusSources(
            settings=settings,
            ledger=ledger,
            health=health,
            dead_letters=dead_letters.recent,
            metrics=metrics,
            series=SeriesCounts(registry),
            member_id=lambda: membership.member_id,
            tls=web is not None and web.tls is not None,
            basic_auth=web is not None and bool(web.users),
        )
    )
    server = MetricsServer(
        settings.metrics_host,
        settings.metrics_port,
        registry,
        health,
        ScrapeAcknowledger(ledger, metrics),
        status=status,
        web=web,
    )
    worker = Worker(
        source=source,
        recorder=Recorder(tracker),
        dead_letters=dead_letters,
        ledger=ledger,
        committer=committer,
        rebalancer=rebalancer,
        metrics=metrics,
        health=health,
        backpressure=Backpressure(
            settings.max_unscraped_events, settings.max_unscraped_age_ms / 1000
        ),
        batch_size=settings.batch_size,
        batch_wait_s=settings.batch_wait_ms / 1000,
        max_message_bytes=settings.max_message_bytes,
    )
    server.start()
    host, port = server.address
    log.info(
        "consuming %s as group %s (%s protocol); dead letters to %s; metrics on "
        "%s://%s:%d/metrics, status page on /%s",
        settings.topic,
        settings.group_id,
        settings.group_protocol,
        settings.dead_letter_topic,
        server.scheme,
        host,
        port,
        " (basic auth)" if web is not None and web.users else "",
    )
    log.info("commit mode %s: %s", settings.commit_mode, _COMMIT_MODES[settings.commit_mode])
    log.debug("settings: %s", settings.redacted())
    try:
        worker.run(stop)
    finally:
        dead_letters.close()
        server.stop()
        meter_provider.shutdown()
    return 0


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: finishing the batch in hand", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, generated from the model so the two never drift apart."""
    for name, field in Settings.model_fields.items():
        if name == "kafka_options":
            parser.add_argument(
                "--kafka-option",
                dest="kafka_options",
                action="append",
                metavar="KEY=VALUE",
                help="extra librdkafka setting, repeatable (env: JSON object)",
            )
            continue
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            metavar=name.upper(),
            help=f"{field.description or ''} (env {ENV_PREFIX}{name.upper()})",
        )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    values = {n: getattr(args, n, None) for n in Settings.model_fields}
    options = values.pop("kafka_options")
    out = {k: v for k, v in values.items() if v is not None}
    if options:
        parsed = {}
        for item in options:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(
                    "kafka_options (flag --kafka-option)", f"{item!r} is not KEY=VALUE"
                )
            parsed[key.strip()] = value
        out["kafka_options"] = parsed
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings(_overrides(args))
    logs.configure(settings.log_level, settings.log_format)
    stop = threading.Event()
    _stop_on_signals(stop)
    return run_worker(settings, stop)


def _cmd_replay(args: argparse.Namespace) -> int:
    settings = load_settings(_overrides(args))
    logs.configure(settings.log_level, settings.log_format)
    since_ms = None
    if args.from_timestamp is not None:
        try:
            since = parse_rfc3339(args.from_timestamp)
        except ValueError:  # pydantic's errors are ValueErrors
            raise UsageConsumerError(
                f"--from-timestamp {args.from_timestamp!r} is not an RFC 3339 date-time with a "
                "time zone, e.g. 2026-11-27T10:00:00Z"
            ) from None
        assert isinstance(since, datetime)
        since_ms = int(since.timestamp() * 1000)
    return replay.run(
        AdminClient(settings.admin_config()),
        settings.group_id,
        settings.topic,
        sys.stdout,
        _confirmer(args.yes),
        from_timestamp_ms=since_ms,
        from_offset=args.from_offset,
    )


def _confirmer(yes: bool) -> Callable[[str], bool]:
    def confirm(question: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise UsageConsumerError("not a terminal to confirm on: pass --yes to reset")
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")

    return confirm


def _cmd_broker(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    if args.action == "start":
        info = broker.start_broker(data_dir, args.port)
        print(f"broker running (pid {info.pid}, data in {info.data_dir})")
        print(info.bootstrap)
        return 0
    if broker.stop_broker(data_dir):
        print("broker stopped")
    else:
        print("no broker was running")
    return 0


def _cmd_produce(args: argparse.Namespace) -> int:
    config: dict[str, Any] = {"bootstrap.servers": args.bootstrap_servers}
    publisher = Publisher(config, args.topic)
    if args.from_file:
        publisher.send_file(Path(args.from_file))
    else:
        publisher.send_events(synthetic_events(args.count, args.seed), rate=args.rate)
    remaining = publisher.flush()
    print(f"delivered {publisher.delivered}, failed {len(publisher.failed) + remaining}")
    if publisher.failed:
        print(f"first failure: {publisher.failed[0]}", file=sys.stderr)
    return 1 if publisher.failed or remaining else 0


def _cmd_validate(args: argparse.Namespace) -> int:
    invalid = total = 0
    with Path(args.file).open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            total += 1
            outcome = decode(line.removesuffix(b"\n"), args.max_message_bytes)
            if isinstance(outcome, Rejection):
                invalid += 1
                print(f"line {number}: {outcome.reason.value}: {outcome.detail}")
    print(f"{total - invalid} valid, {invalid} invalid", file=sys.stderr)
    return 1 if invalid else 0


def _cmd_schema(_args: argparse.Namespace) -> int:
    sys.stdout.write(json_schema_text())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    was_running = broker.broker_status(data_dir) is not None
    print("starting the local Kafka broker (the first run downloads its jars)...", flush=True)
    info = broker.start_broker(data_dir, args.port)
    stop = threading.Event()
    monitor_stop = threading.Event()
    _stop_on_signals(stop)
    try:
        settings = load_settings(
            {
                # Nobody else scrapes the demo: its monitor does, every 2 s.
                "handover_timeout_ms": 5000,
                **_overrides(args),
                "bootstrap_servers": info.bootstrap,
            }
        )
        ensure_topics(info.bootstrap, [settings.topic, settings.dead_letter_topic], partitions=6)
        producer = threading.Thread(
            target=_demo_producer,
            args=(info.bootstrap, settings.topic, args.rate, stop),
            name="demo-producer",
            daemon=True,
        )
        producer.start()
        host = "127.0.0.1" if settings.metrics_host in ("0.0.0.0", "") else settings.metrics_host
        monitor = threading.Thread(
            target=_demo_monitor,
            # Its own stop: it must keep scraping while the worker hands over on Ctrl-C.
            args=(f"http://{host}:{settings.metrics_port}/metrics", monitor_stop),
            name="demo-monitor",
            daemon=True,
        )
        monitor.start()
        print(
            f"\nbroker   {info.bootstrap}\ntopic    {settings.topic} "
            f"({args.rate:g} demo events/s, ~1% invalid -> {settings.dead_letter_topic})\n"
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
    publisher = Publisher({"bootstrap.servers": bootstrap}, topic)
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
                publisher.send(json.dumps(event).encode(), key=event["event_id"].encode())


def _demo_monitor(url: str, stop: threading.Event) -> None:
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
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
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
            f" | committed {values.get('usage_consumer_partition_committed_offset', 0):.0f}"
            f" (last commit {since})"
            f" | input tokens {values.get('llm_token_usage_input_total', 0):.0f}"
        )
        print("\r\033[K" + line if tty else line, end="" if tty else "\n", flush=True)


def ensure_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    """Create missing topics (replication 1: for the local broker only)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [NewTopic(t, partitions, 1) for t in topics if t not in existing]
    for future in admin.create_topics(missing).values() if missing else []:
        future.result(timeout=30)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usage-consumer",
        description="LLM usage events from Kafka to Prometheus, at least once.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the worker")
    _settings_flags(run)
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="local broker, demo producer and worker (make run)")
    demo.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    demo.add_argument("--port", type=int, default=None, help="broker port (default: a free one)")
    demo.add_argument("--rate", type=float, default=20.0, help="demo events per second")
    _settings_flags(demo)
    demo.set_defaults(func=_cmd_demo)

    rep = sub.add_parser(
        "replay", help="move the group's offsets back for a backfill, then follow it to the end"
    )
    start = rep.add_mutually_exclusive_group(required=True)
    start.add_argument(
        "--from-timestamp", metavar="RFC3339", help="replay from the first event at or after it"
    )
    start.add_argument(
        "--from-offset", type=int, metavar="N", help="replay every partition from offset N"
    )
    rep.add_argument("--yes", action="store_true", help="reset without asking")
    _settings_flags(rep)
    rep.set_defaults(func=_cmd_replay)

    brk = sub.add_parser("broker", help="the embedded single-node Kafka broker")
    brk.add_argument("action", choices=["start", "stop"])
    brk.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    brk.add_argument("--port", type=int, default=None, help="broker port (default: a free one)")
    brk.set_defaults(func=_cmd_broker)

    prod = sub.add_parser("produce", help="publish synthetic events or a file's lines")
    prod.add_argument("--bootstrap-servers", required=True)
    prod.add_argument("--topic", required=True)
    source = prod.add_mutually_exclusive_group(required=True)
    source.add_argument("--count", type=int, help="how many synthetic events")
    source.add_argument("--from-file", metavar="F.jsonl", help="each line verbatim, one message")
    prod.add_argument("--rate", type=float, default=0.0, help="events per second (0: flat out)")
    prod.add_argument("--seed", type=int, default=0, help="seed of the synthetic mix")
    prod.set_defaults(func=_cmd_produce)

    val = sub.add_parser("validate", help="check a .jsonl file of events offline")
    val.add_argument("file")
    val.add_argument(
        "--max-message-bytes", type=int, default=Settings.model_fields["max_message_bytes"].default
    )
    val.set_defaults(func=_cmd_validate)

    schema = sub.add_parser("schema", help="print the event JSON Schema")
    schema.set_defaults(func=_cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logs.configure()  # commands that load settings apply log_level and log_format
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UsageConsumerError as exc:
        print(f"usage-consumer: {exc}", file=sys.stderr)
        return 2
