"""The Go publisher library (clients/go/usageevents) against a real broker and a real worker.

Its own tests (`go vet`, `go test -race`) run first. Then its demo program publishes 10,000
events at a steady rate to a broker of this test's own (never the session broker other tests
share) while the broker is killed with SIGKILL for 10 s and started again on the same port and
data dir. Every event must be accounted for, delivered or dropped by reason, and a real worker
must count exactly the events the publisher reports as delivered: no more, no fewer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumer.devtools import broker
from consumer.pipeline.validate import FastUsageEvent, decode_fast
from tests.harness import (
    WorkerProcess,
    end_offsets,
    expected_series,
    total,
    usage_series,
)
from tests.test_go_producer import _go, _go_env

pytestmark = pytest.mark.integration

MODULE = Path(__file__).resolve().parents[1] / "clients" / "go" / "usageevents"
COUNT = 10_000
# events/s: 40 s of publishing. The broker is killed 5 s in and is back some 20 s later (10 s
# away, then about 10 s to start), so the last 15 s are published to a broker that is back.
RATE = 250
PARTITIONS = 3
OUTAGE_S = 10.0
KILL_AFTER_S = 5.0
BUFFER = 1000  # fewer than the events recorded while the broker is away: some are dropped
DELIVERY_TIMEOUT = "4s"  # shorter than the outage: some are dropped when it runs out
MAX_MESSAGE_BYTES = 65536


def _run_go(
    *args: str, timeout: float = 600, cgo: bool = False
) -> subprocess.CompletedProcess[str]:
    # The race detector needs cgo (and a C compiler); everything else builds without.
    env = {**_go_env(), "CGO_ENABLED": "1"} if cgo else _go_env()
    return subprocess.run(
        [_go(), *args],
        cwd=MODULE,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_go_vet_gofmt_and_race_tests() -> None:
    """The module's own checks: vet, gofmt and its tests under the race detector."""
    vet = _run_go("vet", "-mod=readonly", "./...")
    assert vet.returncode == 0, f"go vet failed:\n{vet.stdout}{vet.stderr}"
    gofmt = subprocess.run(
        [str(Path(_go()).resolve().with_name("gofmt")), "-l", "."],
        cwd=MODULE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (gofmt.returncode, gofmt.stdout) == (0, ""), f"gofmt: {gofmt.stdout}{gofmt.stderr}"
    tested = _run_go("test", "-mod=readonly", "-race", "-count=1", "./...", cgo=True)
    assert tested.returncode == 0, f"go test -race failed:\n{tested.stdout}{tested.stderr}"
    assert "ok  \tgithub.com/llm-usage-consumer/clients/go/usageevents\t" in tested.stdout


@pytest.fixture(scope="module")
def publish_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("publish-demo") / "publish-demo"
    built = _run_go("build", "-mod=readonly", "-o", str(binary), "./cmd/publish-demo", timeout=300)
    if built.returncode != 0:
        pytest.fail(f"go build ./cmd/publish-demo failed:\n{built.stderr}")
    return binary


def _create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [NewTopic(name, PARTITIONS, 1), NewTopic(f"{name}.dlq", 1, 1)]
    for future in admin.create_topics(topics).values():
        future.result(timeout=30)


def _wait_for_line(path: Path, text: str, proc: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} from publish-demo:\n{path.read_text(errors='replace')}")


def _kill_for(info: broker.BrokerInfo, seconds: float) -> tuple[float, float]:
    """SIGKILL the broker, keep it away `seconds`, start it again; returns the whole outage in
    seconds and the wall-clock time the broker was back."""
    killed = time.monotonic()
    os.kill(info.pid, signal.SIGKILL)
    while broker.broker_status(info.data_dir) is not None:
        time.sleep(0.05)
    time.sleep(max(0.0, killed + seconds - time.monotonic()))
    again = broker.start_broker(info.data_dir, info.port)
    assert again.bootstrap == info.bootstrap
    return time.monotonic() - killed, time.time()


def test_broker_killed_mid_publish_every_event_accounted_for(
    publish_demo: Path, own_broker: broker.BrokerInfo, group_id: str, tmp_path: Path
) -> None:
    bootstrap = own_broker.bootstrap
    topic = "go-publisher-kill"
    _create_topic(bootstrap, topic)
    events_path = tmp_path / "delivered.jsonl"
    stderr_path = tmp_path / "publish-demo.stderr"

    with stderr_path.open("w") as stderr:
        demo = subprocess.Popen(
            [
                str(publish_demo),
                "-brokers",
                bootstrap,
                "-topic",
                topic,
                "-count",
                str(COUNT),
                "-rate",
                str(RATE),
                "-buffer",
                str(BUFFER),
                "-delivery-timeout",
                DELIVERY_TIMEOUT,
                "-close-timeout",
                "60s",
                "-events",
                str(events_path),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            _wait_for_line(stderr_path, "ready", demo, 30)
            time.sleep(KILL_AFTER_S)
            outage, back_at = _kill_for(own_broker, OUTAGE_S)
            out, _ = demo.communicate(timeout=120)
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.communicate()
    log = stderr_path.read_text(errors="replace")
    assert demo.returncode == 0, log
    report: dict[str, Any] = json.loads(out)
    print(f"outage {outage:.1f} s; publisher: {json.dumps(report)}")  # shown with -s

    # Every event is accounted for: delivered, or dropped and counted by reason.
    assert report["recorded"] == COUNT
    assert report["delivered"] + report["dropped_total"] == COUNT
    assert report["dropped_total"] == sum(report["dropped"].values())
    assert report["close_error"] == ""  # Close resolved every pending event
    # The outage outlasted the buffer and the delivery timeout: both kinds of drop happened,
    # were counted, and were reported in the log (rate-limited), not silently.
    assert set(report["dropped"]) == {"buffer_full", "delivery_timeout"}
    assert report["enqueued"] == COUNT - report["dropped"]["buffer_full"]
    assert "dropping usage events" in log
    assert 0 < report["delivered"] < COUNT

    # The publisher's own list of what Kafka acknowledged.
    lines = events_path.read_bytes().splitlines()
    events = [json.loads(line) for line in lines]
    assert len(events) == report["delivered"]
    assert len({e["event_id"] for e in events}) == len(events)
    assert all(isinstance(decode_fast(line, MAX_MESSAGE_BYTES), FastUsageEvent) for line in lines)
    # Publishing went on once the broker was back, and those events were delivered.
    last = max(datetime.fromisoformat(e["occurred_at"]) for e in events)
    assert last.timestamp() > back_at + 5, (last, back_at)

    # Exactly those on the topic: no retry written twice, nothing dropped written anyway.
    ends = end_offsets(bootstrap, topic, PARTITIONS)
    assert sum(ends.values()) == report["delivered"]

    worker = WorkerProcess(bootstrap, topic, group_id, tmp_path, "--batch-wait-ms", "50")
    worker.start()
    worker.wait_ready()
    worker.wait_for(
        lambda: (
            total(worker.scrape(), "usage_consumer_messages_consumed_total") == report["delivered"]
        ),
        60,
        "done reading the topic",
    )
    series = worker.scrape()
    assert usage_series(series) == expected_series(events)
    assert total(series, "llm_request_count_total") == report["delivered"]
    assert total(series, "usage_consumer_messages_rejected_total") == 0
    print(
        "worker: requests",
        total(series, "llm_request_count_total"),
        "input tokens",
        total(series, "llm_token_usage_input_total"),
        "output tokens",
        total(series, "llm_token_usage_output_total"),
    )
    assert worker.stop() == 0
