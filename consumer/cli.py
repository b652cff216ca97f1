"""`usage-consumer`: the command line. It parses arguments and dispatches; consumer.app wires.

usage-consumer run                      the worker
usage-consumer demo                     local broker + demo producer + worker (`make run`)
usage-consumer topics create|describe   the topic and its dead-letter topic
usage-consumer dlq summary|show|redrive dead letters: counts, contents, republishing
usage-consumer broker start|stop        the embedded single-node Kafka broker
usage-consumer produce                  synthetic events, or a .jsonl file verbatim
usage-consumer validate FILE|- ...      check events offline (JSON lines or one document)
usage-consumer schema                   print the event JSON Schema
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from consumer import logs
from consumer.app import run_worker, stop_on_signals
from consumer.devtools import broker
from consumer.devtools.check import check_inputs
from consumer.devtools.demo import run_demo
from consumer.devtools.produce import Publisher, synthetic_events
from consumer.errors import ConfigError, UsageConsumerError
from consumer.kafka import dlq, replay, topics
from consumer.keys.strategies import KEY_STRATEGIES
from consumer.settings import ENV_PREFIX, Settings, load_settings, setting_label
from schemas import json_schema_text
from schemas.usage_event import parse_rfc3339

__all__ = ["main"]

log = logging.getLogger("consumer")

DEFAULT_DATA_DIR = Path(".local/kafka")


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
    stop_on_signals(stop)
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
        _confirmer(args.yes, "reset"),
        from_timestamp_ms=since_ms,
        from_offset=args.from_offset,
        dead_letter_topic=settings.dead_letter_topic,
        consumer_config=settings.consumer_config(),
    )


def _cmd_topics(args: argparse.Namespace) -> int:
    settings = load_settings(_overrides(args))
    logs.configure(settings.log_level, settings.log_format)
    if args.action == "describe":
        return topics.describe_command(settings)
    return topics.create_command(
        settings,
        partitions=args.partitions,
        dlq_partitions=args.dlq_partitions,
        replication_factor=args.replication_factor,
    )


def _cmd_dlq(args: argparse.Namespace) -> int:
    settings = load_settings(_overrides(args))
    logs.configure(settings.log_level, settings.log_format)
    filters = dlq.Filters.of(args.reason, args.partition, args.offset)
    if args.action == "summary":
        return dlq.summary(
            settings.consumer_config(),
            settings.dead_letter_topic,
            sys.stdout,
            filters=filters,
            by_partition=args.by_partition,
        )
    if args.action == "show":
        return dlq.show(
            settings.consumer_config(),
            settings.dead_letter_topic,
            sys.stdout,
            filters=filters,
            limit=args.limit or None,
            max_bytes=args.max_bytes,
        )
    return dlq.redrive(
        settings.consumer_config(),
        settings.producer_config(),
        settings.dead_letter_topic,
        sys.stdout,
        _confirmer(args.yes, "republish"),
        filters=filters,
    )


def _confirmer(yes: bool, verb: str) -> Callable[[str], bool]:
    def confirm(question: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise UsageConsumerError(f"not a terminal to confirm on: pass --yes to {verb}")
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
    config: dict[str, Any] = {
        "bootstrap.servers": args.bootstrap_servers,
        "logger": logging.getLogger(logs.KAFKA_LOGGER),
    }
    if args.from_file and not Path(args.from_file).is_file():
        raise UsageConsumerError(f"produce: --from-file {args.from_file}: no such file")
    publisher = Publisher(config, args.topic)
    if args.from_file:
        publisher.send_file(Path(args.from_file))
    else:
        publisher.send_events(
            synthetic_events(args.count, args.seed), rate=args.rate, key=KEY_STRATEGIES[args.key]
        )
    remaining = publisher.flush()
    print(f"delivered {publisher.delivered}, failed {len(publisher.failed) + remaining}")
    if publisher.failed:
        print(f"first failure: {publisher.failed[0]}", file=sys.stderr)
    return 1 if publisher.failed or remaining else 0


def _cmd_validate(args: argparse.Namespace) -> int:
    result = check_inputs(
        args.files, args.max_message_bytes, args.unknown_fields, out=sys.stdout, err=sys.stderr
    )
    return 1 if result.invalid else 0


def _cmd_schema(_args: argparse.Namespace) -> int:
    sys.stdout.write(json_schema_text())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(Path(args.data_dir).resolve(), args.port, args.rate, _overrides(args))


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

    top = sub.add_parser(
        "topics", help="create the topic and its dead-letter topic, or describe them"
    )
    top.add_argument("action", choices=["create", "describe"])
    top.add_argument("--partitions", type=int, default=topics.DEFAULT_PARTITIONS)
    top.add_argument(
        "--dlq-partitions",
        type=int,
        default=topics.DEFAULT_DLQ_PARTITIONS,
        help=f"partitions of the dead-letter topic (default {topics.DEFAULT_DLQ_PARTITIONS})",
    )
    top.add_argument("--replication-factor", type=int, default=topics.DEFAULT_REPLICATION)
    _settings_flags(top)
    top.set_defaults(func=_cmd_topics)

    dead = sub.add_parser(
        "dlq", help="dead letters: counts by reason, show them, or republish them after a fix"
    )
    dead.add_argument("action", choices=["summary", "show", "redrive"])
    dead.add_argument("--reason", action="append", help="only this reason code (repeatable)")
    dead.add_argument("--partition", type=int, help="only this partition of the source topic")
    dead.add_argument("--offset", metavar="N|A-B", help="only this source offset, or range")
    dead.add_argument("--by-partition", action="store_true", help="summary: per partition")
    dead.add_argument("--limit", type=int, default=20, help="show: at most this many (0: all)")
    dead.add_argument(
        "--max-bytes", type=int, default=dlq.DEFAULT_MAX_BYTES, help="show: of each value"
    )
    dead.add_argument("--yes", action="store_true", help="redrive without asking")
    _settings_flags(dead)
    dead.set_defaults(func=_cmd_dlq)

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
    prod.add_argument(
        "--key",
        choices=list(KEY_STRATEGIES),
        default="attributes",
        help="message key of synthetic events: attributes (a hash of the attribute set, so "
        "each set stays on one partition), event-id or none (default: attributes)",
    )
    prod.set_defaults(func=_cmd_produce)

    val = sub.add_parser(
        "validate", help="check events offline: JSON lines, or one JSON document, per file"
    )
    val.add_argument("files", nargs="+", metavar="FILE", help="a file, or - for standard input")
    val.add_argument(
        "--unknown-fields",
        choices=["ignore", "reject"],
        default="ignore",
        help="as the worker's unknown_fields setting (default: ignore, with a warning for a "
        "field that looks like a known one)",
    )
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
    except KafkaException as exc:
        # A client librdkafka refused to build: a property it does not know, or a bad value.
        error = exc.args[0] if exc.args else None
        if not isinstance(error, KafkaError) or error.code() != KafkaError._INVALID_ARG:
            raise
        print(
            f"usage-consumer: {ConfigError(setting_label('kafka_options'), error.str())}",
            file=sys.stderr,
        )
        return 2
