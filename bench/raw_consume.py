"""Row 1, the floor: a confluent-kafka loop that only reads the messages.

Large `consume()` batches are the fastest way the Python client hands messages over; the loop
touches each message's error and value (as any consumer must) and nothing else. No commits: it
stops on its own after `--expected` messages and reports "done".

    python -m bench.raw_consume --bootstrap-servers B --topic T --group-id G --expected N
"""

from __future__ import annotations

import argparse
import time

from confluent_kafka import Consumer

from bench.common import emit, stop_on_sigterm

BATCH = 10_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group-id", required=True)
    parser.add_argument("--expected", type=int, required=True)
    args = parser.parse_args()

    stop = stop_on_sigterm()
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap_servers,
            "group.id": args.group_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.topic])
    count = errors = value_bytes = 0
    started = False
    while count < args.expected and not stop.is_set():
        messages = consumer.consume(num_messages=BATCH, timeout=0.5)
        if messages and not started:
            emit("start")  # the window starts at the first message in hand
            started = True
        for message in messages:
            if message.error() is not None:
                errors += 1
                continue
            value_bytes += len(message.value())
            count += 1
    emit("done", count=count, errors=errors, value_bytes=value_bytes)
    # Stay in the group until told to stop, as the other rows do, so the orchestrator samples
    # this process's CPU and memory while it is still alive.
    while not stop.is_set():
        time.sleep(0.05)
    consumer.close()
    emit("stopped", count=count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
