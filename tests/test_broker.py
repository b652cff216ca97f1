"""The local Kafka broker helper (consumer.devtools.broker), against a real broker it starts."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_INVALID, Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumer.devtools.broker import (
    BrokerInfo,
    broker_status,
    ensure_jars,
    start_broker,
    stop_broker,
)
from consumer.errors import BrokerError

pytestmark = pytest.mark.integration


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A broker data dir whose broker, if any was started, is stopped whatever the test did."""
    path = tmp_path / "kafka"
    try:
        yield path
    finally:
        stop_broker(path, timeout=10.0)


def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=30)


def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    delivered: list[Any] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(topic, value=value, on_delivery=lambda err, _msg: delivered.append(err))
    assert producer.flush(30) == 0
    assert delivered == [None]


def _consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.protocol": "consumer",  # KIP-848, as the service uses
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )


def _first_message(consumer: Consumer, topic: str, timeout: float = 30.0) -> Message:
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        return msg
    pytest.fail(f"no message on {topic} within {timeout} s")


def test_restart_keeps_address_data_and_offsets(data_dir: Path) -> None:
    extra = {"message.max.bytes": "2000000", "advertised.listeners": "PLAINTEXT://127.0.0.1:{port}"}
    first = start_broker(data_dir, extra_properties=extra)
    assert first.bootstrap == f"127.0.0.1:{first.port}"
    assert first.port != first.controller_port
    assert broker_status(data_dir) == first
    assert start_broker(data_dir) == first  # already running: the same broker

    topic, group = "usage-events", f"test-{uuid.uuid4().hex[:8]}"
    _create_topic(first.bootstrap, topic)
    _produce(first.bootstrap, topic, b"hello")
    consumer = _consumer(first.bootstrap, group)
    try:
        msg = _first_message(consumer, topic)
        assert msg.value() == b"hello"
        consumer.commit(message=msg, asynchronous=False)
    finally:
        consumer.close()

    assert stop_broker(data_dir)
    assert broker_status(data_dir) is None
    assert not stop_broker(data_dir)  # nothing left to stop

    second = start_broker(data_dir)  # no extra_properties: the stored ones apply again
    assert (second.bootstrap, second.controller_port) == (first.bootstrap, first.controller_port)
    assert second.pid != first.pid
    props = (data_dir / "server.properties").read_text().splitlines()
    assert "message.max.bytes=2000000" in props
    assert f"advertised.listeners=PLAINTEXT://{first.bootstrap}" in props

    # The message is still there for a new group, and the first group's commit survived.
    consumer = _consumer(second.bootstrap, f"{group}-again")
    try:
        assert _first_message(consumer, topic).value() == b"hello"
        [committed] = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        assert committed.offset == OFFSET_INVALID  # this group committed nothing
    finally:
        consumer.close()
    consumer = _consumer(second.bootstrap, group)
    try:
        [committed] = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        assert committed.offset == 1
    finally:
        consumer.close()


def test_failed_starts_raise_broker_error_and_leave_nothing_running(
    data_dir: Path, tmp_path: Path
) -> None:
    # Not ready in time: stopped, and the error carries the log.
    with pytest.raises(BrokerError, match="not ready within"):
        start_broker(data_dir, timeout=0.0)
    assert broker_status(data_dir) is None

    # The JVM exits at once (no jars: no main class); its own words reach the error.
    empty = tmp_path / "no-jars"
    empty.mkdir()
    with pytest.raises(BrokerError, match=r"exited during start-up(?s:.*)kafka\.Kafka"):
        start_broker(data_dir, jars=empty)
    assert broker_status(data_dir) is None

    # The data dir is still fine.
    info: BrokerInfo = start_broker(data_dir)
    assert broker_status(data_dir) == info


def test_port_in_use_is_reported_before_starting(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = int(sock.getsockname()[1])
        with pytest.raises(BrokerError, match=f"port {port} .* already in use"):
            start_broker(tmp_path / "kafka", port=port)
    assert broker_status(tmp_path / "kafka") is None


def test_status_and_stop_without_a_broker(tmp_path: Path) -> None:
    assert broker_status(tmp_path) is None
    assert not stop_broker(tmp_path)
    assert not stop_broker(tmp_path / "missing")


def test_jar_cache_is_complete(tmp_path: Path) -> None:
    jars = ensure_jars()
    assert (jars / ".complete").is_file()
    names = {p.name for p in jars.glob("*.jar")}
    assert any(n.startswith("kafka_2.13-") for n in names)
    # The SLF4J 1.x binding, or the broker would log nothing at all.
    assert any(n.startswith("log4j-slf4j-impl-") for n in names)
    assert ensure_jars() == jars  # cached: no second download
