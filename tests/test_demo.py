"""The demo's summary line counts this run only: no placeholders, nothing a previous run did."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from consumer.devtools.demo import _starting_positions, committed_this_run
from tests.conftest import TopicFactory


def test_partitions_without_a_commit_count_zero_not_minus_one() -> None:
    # Six partitions, none committed yet: the worker's gauges say -1 each.
    assert committed_this_run(dict.fromkeys(range(6), -1.0), dict.fromkeys(range(6), 0)) == 0
    assert committed_this_run({0: 40.0, 1: -1.0, 2: 7.0}, {0: 0, 1: 0, 2: 0}) == 47


def test_what_an_earlier_run_committed_is_not_this_runs() -> None:
    assert committed_this_run({0: 140.0, 1: 12.0}, {0: 100, 1: 12}) == 40


@pytest.mark.integration
def test_the_run_starts_where_the_group_resumes(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_id: str
) -> None:
    topic = topic_factory(2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for n in range(10):
        producer.produce(topic, b"x", partition=n % 2)
    assert producer.flush(10) == 0
    # A previous run committed 3 on partition 0 and nothing on partition 1.
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group_id})
    consumer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    consumer.close()

    assert _starting_positions(kafka_bootstrap, group_id, topic) == {0: 3, 1: 0}
