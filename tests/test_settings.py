"""Settings: env and flags, librdkafka rendering, and start-up refusing a bad setting by name."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from consumer.cli import _overrides, _parser
from consumer.errors import ConfigError
from consumer.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("USAGE_CONSUMER_"):
            monkeypatch.delenv(name)


def test_defaults_render_the_delivery_critical_librdkafka_keys() -> None:
    settings = load_settings()
    config = settings.consumer_config()
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False
    assert config["auto.offset.reset"] == "earliest"
    assert config["partition.assignment.strategy"] == "cooperative-sticky"
    assert config["group.id"] == "llm-usage-consumer"
    assert settings.dead_letter_topic == "llm-usage.dlq"
    producer = settings.producer_config()
    assert producer["acks"] == "all"
    assert producer["enable.idempotence"] is True
    assert "group.id" not in producer
    assert "partition.assignment.strategy" not in producer


def test_admin_config_has_the_connection_and_security_but_no_consumer_or_producer_keys() -> None:
    settings = load_settings(
        {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "u",
            "sasl_password": "p",
            "kafka_options": {"socket.timeout.ms": "5000", "fetch.min.bytes": "10"},
        }
    )
    config = settings.admin_config()
    assert config["bootstrap.servers"] == settings.bootstrap_servers
    assert (config["sasl.username"], config["sasl.password"]) == ("u", "p")
    assert config["socket.timeout.ms"] == "5000"
    assert not {"group.id", "fetch.min.bytes", "acks", "linger.ms"} & set(config)


def test_log_format_defaults_to_auto_and_refuses_others() -> None:
    assert load_settings().log_format == "auto"
    with pytest.raises(ConfigError, match="log_format"):
        load_settings({"log_format": "xml"})


def test_prefetch_is_small_and_refilled_promptly_unless_overridden() -> None:
    config = load_settings().consumer_config()
    assert (config["queued.max.messages.kbytes"], config["fetch.queue.backoff.ms"]) == (16_384, 50)
    assert "fetch.queue.backoff.ms" not in load_settings().producer_config()
    options = {"kafka_options": {"fetch.queue.backoff.ms": "200"}}
    assert load_settings(options).consumer_config()["fetch.queue.backoff.ms"] == "200"


def test_env_then_flags_take_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USAGE_CONSUMER_TOPIC", "from-env")
    monkeypatch.setenv("USAGE_CONSUMER_BATCH_SIZE", "77")
    monkeypatch.setenv("USAGE_CONSUMER_KAFKA_OPTIONS", '{"fetch.min.bytes": "1024"}')
    args = _parser().parse_args(
        ["run", "--topic", "from-flag", "--kafka-option", "session.timeout.ms=9000"]
    )
    settings = load_settings(_overrides(args))
    assert settings.topic == "from-flag"
    assert settings.batch_size == 77
    assert settings.dead_letter_topic == "from-flag.dlq"
    # Extra librdkafka options merge: the flag adds to (and would override) the env's keys.
    assert settings.kafka_options == {"fetch.min.bytes": "1024", "session.timeout.ms": "9000"}
    assert settings.consumer_config()["session.timeout.ms"] == "9000"


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(Exception, match="frozen"):
        settings.topic = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"metrics_port": "99999"}, "USAGE_CONSUMER_METRICS_PORT"),
        ({"batch_size": "0"}, "--batch-size"),
        ({"batch_size": "many"}, "--batch-size"),
        ({"topic": ""}, "USAGE_CONSUMER_TOPIC"),
        ({"log_level": "LOUD"}, "--log-level"),
        ({"kafka_options": {"enable.auto.commit": "true"}}, "enable.auto.commit"),
        ({"kafka_options": {"sasl.password": "x"}}, "sasl_password"),
        ({"dlq_topic": "same", "topic": "same"}, "dlq_topic must differ"),
        ({"security_protocol": "SASL_SSL"}, "sasl_mechanism"),
        ({"nonsense": "1"}, "nonsense"),
        ({"commit_mode": "eventually"}, "--commit-mode"),
        ({"series_idle_ttl": "5x"}, "--series-idle-ttl"),
        ({"series_idle_ttl": "1h 30m"}, "'1h 30m' is not a duration"),
        ({"series_idle_ttl": "0.5"}, "USAGE_CONSUMER_SERIES_IDLE_TTL"),
        ({"series_idle_ttl": "-1"}, "must be 0 (never) or between 1s and 30d"),
        ({"series_idle_ttl": "31d"}, "--series-idle-ttl"),
        ({"handover_timeout_ms": "300000"}, "max.poll.interval.ms"),
        (
            {"handover_timeout_ms": "20000", "kafka_options": {"max.poll.interval.ms": "10000"}},
            "handover_timeout_ms (20000) must be below max.poll.interval.ms (10000)",
        ),
        (
            {"group_protocol": "consumer", "kafka_options": {"session.timeout.ms": "6000"}},
            "session.timeout.ms cannot be set with group_protocol=consumer",
        ),
    ],
)
def test_bad_setting_is_named(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match="invalid setting") as excinfo:
        load_settings(overrides)
    assert named in str(excinfo.value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("90", 90.0),
        ("90s", 90.0),
        ("2.5", 2.5),
        ("30m", 1800.0),
        ("1h30m", 5400.0),
        ("6h", 21600.0),
        ("1d", 86400.0),
        ("1500ms", 1.5),
        (" 10m ", 600.0),
    ],
)
def test_series_idle_ttl_takes_a_duration_or_seconds(value: str, seconds: float) -> None:
    assert load_settings({"series_idle_ttl": value}).series_idle_ttl == seconds


def test_secret_never_appears_in_dumps_or_repr() -> None:
    settings = load_settings(
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "svc",
            "sasl_password": "hunter2-very-secret",
        }
    )
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.redacted())
    assert settings.consumer_config()["sasl.password"] == "hunter2-very-secret"


def test_every_setting_has_a_flag() -> None:
    help_text = _parser().parse_args(["run"])  # parses with no flags at all
    assert all(getattr(help_text, name, "missing") is None for name in Settings.model_fields)


def test_bad_setting_stops_start_up_with_its_name() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "run", "--metrics-port", "99999"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid setting metrics_port" in result.stderr
    assert "USAGE_CONSUMER_METRICS_PORT" in result.stderr
    assert "--metrics-port" in result.stderr
    assert "Traceback" not in result.stderr


def test_commit_mode_defaults_to_scrape_and_classic_cooperative_groups() -> None:
    settings = load_settings()
    assert settings.commit_mode == "scrape"
    assert settings.group_protocol == "classic"
    assert settings.consumer_config()["group.protocol"] == "classic"


def test_kip_848_groups_leave_assignment_to_the_broker() -> None:
    config = load_settings({"group_protocol": "consumer"}).consumer_config()
    assert config["group.protocol"] == "consumer"
    assert "partition.assignment.strategy" not in config


def test_consumer_only_options_stay_out_of_the_dead_letter_producer() -> None:
    settings = load_settings(
        {"kafka_options": {"session.timeout.ms": "6000", "fetch.min.bytes": "1", "linger.ms": "9"}}
    )
    producer = settings.producer_config()
    assert "session.timeout.ms" not in producer
    assert "fetch.min.bytes" not in producer
    assert producer["linger.ms"] == "9"  # shared options still apply
    assert settings.consumer_config()["session.timeout.ms"] == "6000"
