"""Row 3, the naive path: consume, validate, record one event at a time, commit per batch.

What a first version of the worker would do: `consumer.pipeline.validate.decode` on each message,
then `TokenTracker.record_usage` per event (8 SDK calls each) on a MeterProvider built exactly as
the worker builds it (`consumer.usage.provider.build_meter_provider`), and a synchronous commit
after every batch, so what is committed was recorded. Nothing scrapes it.

    python -m bench.naive --bootstrap-servers B --topic T --group-id G
"""

from __future__ import annotations

import argparse

from confluent_kafka import Consumer
from prometheus_client import CollectorRegistry

from bench.common import emit, stop_on_sigterm
from consumer.pipeline.validate import Rejection, decode
from consumer.settings import Settings
from consumer.usage.provider import METER_NAME, build_meter_provider
from consumer.usage.record import to_options
from consumer.usage.tracker import TokenTracker

# The worker's defaults, so the two differ only in how they record and commit.
BATCH = Settings.model_fields["batch_size"].default
MAX_BYTES = Settings.model_fields["max_message_bytes"].default
CARDINALITY_LIMIT = Settings.model_fields["cardinality_limit"].default


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group-id", required=True)
    args = parser.parse_args()

    stop = stop_on_sigterm()
    provider = build_meter_provider(CollectorRegistry(), CARDINALITY_LIMIT)
    tracker = TokenTracker(provider.get_meter(METER_NAME))
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap_servers,
            "group.id": args.group_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.topic])
    recorded = rejected = 0
    started = False
    while not stop.is_set():
        messages = consumer.consume(num_messages=BATCH, timeout=0.2)
        if not messages:
            continue
        if not started:
            emit("start")
            started = True
        for message in messages:
            if message.error() is not None:
                continue
            event = decode(message.value(), MAX_BYTES)
            if isinstance(event, Rejection):
                rejected += 1
                continue
            tracker.record_usage(to_options(event))
            recorded += 1
        # Commit the positions consumed so far, only after the batch was recorded.
        consumer.commit(asynchronous=False)
    consumer.close()
    provider.shutdown()
    emit("stopped", count=recorded, rejected=rejected)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
