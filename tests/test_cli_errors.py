"""Every user error ends in one line naming what to fix and exit code 2, never a traceback.

One test per case a new user met (issue 12): a port in use (`run`, and `demo` after it started
its broker), an option librdkafka does not know, a reserved option, a cross-field setting, files
that are not there, standard input, a pretty-printed example, and missing topics.
"""

from __future__ import annotations

import io
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.cli import main
from consumer.devtools import broker
from tests.conftest import TopicFactory

REPO = Path(__file__).resolve().parents[1]
CAMEL = (
    b'{"schema_version": 1, "event_id": "e1", "occurred_at": "2026-12-05T10:00:00Z", '
    b'"provider": "openai", "model": "gpt-4o", "status": "success", "inputTokens": 12, '
    b'"output_tokens": 3}\n'
)


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("usage-consumer: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_an_option_librdkafka_does_not_know(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "--kafka-option", "foo.bar=1", "--bootstrap-servers", "127.0.0.1:9"]
    assert main([*args, "--metrics-port", "0"]) == 2
    assert one_line(capsys) == (
        "usage-consumer: invalid setting kafka_options (env USAGE_CONSUMER_KAFKA_OPTIONS, flag "
        '--kafka-option KEY=VALUE): No such configuration property: "foo.bar"'
    )


def test_a_reserved_option_names_its_own_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--kafka-option", "group.id=x"]) == 2
    assert one_line(capsys) == (
        "usage-consumer: invalid setting kafka_options (env USAGE_CONSUMER_KAFKA_OPTIONS, flag "
        "--kafka-option KEY=VALUE): Value error, group.id cannot be set here: use group_id"
    )


def test_a_cross_field_setting_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--handover-timeout-ms", "400000"]) == 2
    assert one_line(capsys) == (
        "usage-consumer: invalid setting handover_timeout_ms (env "
        "USAGE_CONSUMER_HANDOVER_TIMEOUT_MS, flag --handover-timeout-ms): Value error, "
        "handover_timeout_ms (400000) must be below max.poll.interval.ms (300000), the group's "
        "rebalance timeout"
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["validate", "/nonexistent.jsonl"], "validate: /nonexistent.jsonl: no such file"),
        (["validate", "/"], "validate: /: is a directory, not a file"),
        (
            ["produce", "--bootstrap-servers", "127.0.0.1:9", "--topic", "t", "--from-file", "/no"],
            "produce: --from-file /no: no such file",
        ),
    ],
)
def test_files_that_are_not_there(
    args: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert one_line(capsys) == f"usage-consumer: {line}"


def test_validate_reads_standard_input_and_warns_on_a_camel_case_field(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(CAMEL + CAMEL)))
    assert main(["validate", "-"]) == 0
    out, err = capsys.readouterr()
    warning = (
        "warning: unknown field 'inputTokens' ignored: did you mean 'input_tokens'? "
        "(the worker records input_tokens as 0)"
    )
    assert out.splitlines() == [f"<stdin> line 1: {warning}", f"<stdin> line 2: {warning}"]
    assert err.splitlines() == ["<stdin>: JSON lines, 2 events", "2 valid, 0 invalid"]


def test_validate_takes_the_pretty_printed_examples_and_says_what_it_saw(
    capsys: pytest.CaptureFixture[str],
) -> None:
    examples = sorted(str(p) for p in (REPO / "schemas" / "examples").glob("*.json"))
    assert main(["validate", *examples]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert [line for line in err.splitlines() if "one JSON document" in line] == [
        f"{path}: one JSON document" for path in examples
    ]
    assert err.splitlines()[-1] == f"{len(examples)} valid, 0 invalid"


def test_validate_says_where_an_invalid_event_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(CAMEL + b"\n" + b"{not json}\n")
    assert main(["validate", str(path), "--unknown-fields", "reject"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{path} line 1: unknown_field: unknown fields: inputTokens (did you mean input_tokens?)",
        f"{path} line 3: invalid_json: Invalid JSON: key must be a string at line 1 column 2",
    ]
    assert err.splitlines() == [f"{path}: JSON lines, 2 events", "0 valid, 2 invalid"]


@pytest.mark.integration
def test_run_with_the_metrics_port_in_use(
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    taken_port: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = topic_factory(1)
    args = ["run", "--bootstrap-servers", kafka_bootstrap, "--topic", topic]
    assert main([*args, "--metrics-host", "127.0.0.1", "--metrics-port", str(taken_port)]) == 2
    assert one_line(capsys) == (
        "usage-consumer: invalid setting metrics_port (env USAGE_CONSUMER_METRICS_PORT, flag "
        f"--metrics-port): cannot listen on 127.0.0.1:{taken_port}: Address already in use "
        "(another worker on this host? give each its own port)"
    )


@pytest.mark.integration
def test_run_without_its_dead_letter_topic(
    kafka_bootstrap: str, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = topic_factory(1, with_dlq=False)
    assert main(["run", "--bootstrap-servers", kafka_bootstrap, "--topic", topic]) == 2
    assert one_line(capsys) == (
        f"usage-consumer: dead-letter topic {topic}.dlq does not exist on the cluster at "
        f"{kafka_bootstrap}; create it with: usage-consumer topics create --bootstrap-servers "
        f"{kafka_bootstrap} --topic {topic}"
    )


@pytest.mark.integration
def test_demo_with_the_metrics_port_in_use_stops_the_broker_it_started(
    tmp_path: Path, taken_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "demo"
    try:
        args = ["demo", "--data-dir", str(data_dir), "--metrics-host", "127.0.0.1"]
        assert main([*args, "--metrics-port", str(taken_port)]) == 2
        out = capsys.readouterr().out
        assert "local broker stopped" in out.splitlines()
        assert broker.broker_status(data_dir) is None
    finally:
        broker.stop_broker(data_dir, timeout=10.0)
