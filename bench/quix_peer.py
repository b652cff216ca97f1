"""Row 4, the peer: the same job in Quix Streams 3.x, written the way its documentation shows.

An `Application`, a topic with the JSON value deserializer, a StreamingDataFrame whose
`.update()` records each event through the same `TokenTracker` on the same MeterProvider the
worker builds. Quix Streams polls, deserializes, runs the callback and commits (at-least-once)
itself; `app.run()` runs until SIGTERM, as its docs recommend for production.

Two settings differ from its defaults, both for a fair backlog measurement:
`auto_offset_reset="earliest"` (the default, "latest", would skip the backlog), and
`commit_interval=1.0` (default 5 s) so that its commits trail processing by no more than the
worker's, whose commits follow its 1 s scrapes.

Runs from bench/.venv-quix (quixstreams pins older confluent-kafka and pydantic than the project
uses) with the repository on PYTHONPATH.

    python -m bench.quix_peer --bootstrap-servers B --topic T --group-id G
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

from prometheus_client import CollectorRegistry
from quixstreams import Application

from bench.common import emit
from consumer.usage.provider import METER_NAME, build_meter_provider
from consumer.usage.tracker import TokenTracker, UsageOptions

# The event's field names are UsageOptions' own (see README, "The event schema").
FIELDS = tuple(f.name for f in dataclasses.fields(UsageOptions))
CARDINALITY_LIMIT = 10_000  # the worker's default cardinality_limit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group-id", required=True)
    args = parser.parse_args()

    provider = build_meter_provider(CollectorRegistry(), CARDINALITY_LIMIT)
    tracker = TokenTracker(provider.get_meter(METER_NAME))
    logging.getLogger("opentelemetry").setLevel(logging.ERROR)

    app = Application(
        broker_address=args.bootstrap_servers,
        consumer_group=args.group_id,
        auto_offset_reset="earliest",
        commit_interval=1.0,
        loglevel="WARNING",
    )
    topic = app.topic(args.topic, value_deserializer="json")
    sdf = app.dataframe(topic=topic)

    count = 0

    def record(value: dict[str, Any]) -> None:
        nonlocal count
        if count == 0:
            emit("start")
        tracker.record_usage(UsageOptions(**{k: value[k] for k in FIELDS if k in value}))
        count += 1

    sdf.update(record)
    app.run()  # until SIGTERM; Quix Streams commits what was processed on the way out
    provider.shutdown()
    emit("stopped", count=count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
