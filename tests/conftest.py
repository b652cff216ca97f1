"""Shared fixtures: one real Kafka broker per session, fresh topics and groups per test.

The broker, in order of preference:
1. `USAGE_CONSUMER_TEST_BOOTSTRAP=host:port`: an existing cluster, used as is;
2. `USAGE_CONSUMER_TEST_DOCKER=1`: a testcontainers Kafka container, for users with Docker;
3. otherwise the embedded local broker (consumer.devtools.broker), started here and stopped at
   the end.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumer.devtools import broker
from tests.harness import WorkerProcess, free_port


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("USAGE_CONSUMER_TEST_BOOTSTRAP")
    if existing:
        yield existing
        return
    if os.environ.get("USAGE_CONSUMER_TEST_DOCKER") == "1":
        # Imported only here: the module needs a Docker engine to be of any use.
        from testcontainers.kafka import KafkaContainer  # noqa: PLC0415

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    data_dir: Path = tmp_path_factory.mktemp("kafka")
    info = broker.start_broker(data_dir)
    try:
        yield info.bootstrap
    finally:
        broker.stop_broker(data_dir)


@pytest.fixture(scope="session")
def admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


TopicFactory = Callable[..., str]


@pytest.fixture
def topic_factory(admin: AdminClient, request: pytest.FixtureRequest) -> TopicFactory:
    """Creates a fresh topic (and its `.dlq` topic) named after the test."""

    def create(partitions: int = 3, *, with_dlq: bool = True) -> str:
        base = request.node.name.replace("[", "-").replace("]", "")[:60]
        name = f"{base}-{uuid.uuid4().hex[:8]}"
        topics = [NewTopic(name, partitions, 1)]
        if with_dlq:
            topics.append(NewTopic(f"{name}.dlq", 1, 1))
        for future in admin.create_topics(topics).values():
            future.result(timeout=30)
        return name

    return create


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[broker.BrokerInfo]:
    """A broker of one test alone, on a port of its own, so that the test may kill and restart
    it (never the session broker, which every other test shares)."""
    data_dir = tmp_path / "kafka"
    info = broker.start_broker(data_dir, free_port())
    try:
        yield info
    finally:
        broker.stop_broker(data_dir, timeout=10.0)


@pytest.fixture
def group_id() -> str:
    return f"group-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    """Undo any test's logging set-up: a handler left on a captured, since closed stream would
    print "Logging error" tracebacks into every later test's output."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _no_stray_workers() -> Iterator[None]:
    """Kill any worker subprocess a test left running (a failed assertion skips its stop())."""
    before = set(WorkerProcess.running)
    yield
    for worker in set(WorkerProcess.running) - before:
        worker.kill()
