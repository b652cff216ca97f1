"""Structured logs: JSON off a terminal, text on one, and repeats held back."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from pathlib import Path

import pytest

from consumer.logs import KAFKA_LOGGER, configure
from tests.conftest import TopicFactory
from tests.harness import WorkerProcess


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_when_not_on_a_terminal_with_extras_and_exceptions() -> None:
    out = io.StringIO()
    configure("INFO", "auto", out)
    log = logging.getLogger("consumer.pipeline.worker")
    log.info("handed over %s", [("t", 1)], extra={"partitions": 1, "outcome": "covered"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("commit failed")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert {k: first[k] for k in ("level", "logger", "msg", "partitions", "outcome")} == {
        "level": "INFO",
        "logger": "consumer.pipeline.worker",
        "msg": "handed over [('t', 1)]",
        "partitions": 1,
        "outcome": "covered",
    }
    assert second["level"] == "ERROR"
    assert second["exception"].splitlines()[-1] == "ValueError: boom"


def test_text_on_a_terminal_and_levels_apply() -> None:
    out = _Terminal()
    configure("WARNING", "auto", out)
    logging.getLogger("consumer.kafka.source").info("not shown")
    logging.getLogger("consumer.kafka.source").warning("paused %s", ["t/0"])
    (line,) = out.getvalue().splitlines()
    assert line.endswith(" WARNING consumer.kafka.source: paused ['t/0']")


def test_an_explicit_format_wins_over_the_terminal_check() -> None:
    out = _Terminal()
    configure("INFO", "json", out)
    logging.getLogger("x").info("hello")
    assert json.loads(out.getvalue())["msg"] == "hello"


def test_repeated_warnings_are_held_back_then_counted_but_events_always_pass() -> None:
    out = io.StringIO()
    configure("INFO", "json", out, repeat_window_s=0.2)
    log = logging.getLogger("consumer.kafka.source")
    for n in range(100):
        log.warning("Kafka error: %s", f"broker down (after {n}ms)")  # only numbers differ
    log.warning("Kafka error: %s", "authorization failed")  # another message: not held back
    for _ in range(3):
        log.info("handed over %s (covered)", [("t", 1)])  # an event each time: never held back
    time.sleep(0.25)
    log.warning("Kafka error: %s", "broker down (after 7ms)")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["msg"], e.get("repeated")) for e in lines] == [
        ("Kafka error: broker down (after 0ms)", None),
        ("Kafka error: authorization failed", None),
        *[("handed over [('t', 1)] (covered)", None)] * 3,
        ("Kafka error: broker down (after 7ms)", 99),
    ]


def test_librdkafkas_own_repeat_count_does_not_make_a_new_message() -> None:
    out = io.StringIO()
    configure("INFO", "json", out)
    log = logging.getLogger(KAFKA_LOGGER)
    fail = "FAIL [c#consumer-1] [thrd:b/bootstrap]: b/bootstrap: Connect failed (after 0ms in state"
    log.error("%s CONNECT)", fail)
    log.error("%s CONNECT, 3 identical error(s) suppressed)", fail)
    assert len(out.getvalue().splitlines()) == 1


def test_text_says_how_many_were_held_back() -> None:
    out = _Terminal()
    configure("INFO", "text", out, repeat_window_s=0.1)
    log = logging.getLogger("consumer.pipeline.deadletter")
    for _ in range(3):
        log.error("dead-letter write failed")
    time.sleep(0.15)
    log.error("dead-letter write failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1].endswith("dead-letter write failed (and 2 more like it)")


@pytest.mark.integration
def test_a_real_worker_logs_json_lines_off_a_terminal(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    worker = WorkerProcess(
        kafka_bootstrap,
        topic_factory(1),
        group_id,
        tmp_path,
        env={"USAGE_CONSUMER_LOG_FORMAT": "auto"},
    ).start()
    worker.wait_ready()
    assert worker.stop() == 0
    entries = [
        json.loads(line)
        for line in worker.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    messages = [(e["logger"], e["msg"].split(" ", 1)[0]) for e in entries]
    assert ("consumer", "consuming") in messages
    assert ("consumer.kafka.source", "assigned") in messages
    assert ("consumer.pipeline.worker", "left") in messages
