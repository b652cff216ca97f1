"""The worker's settings: one frozen model, read from `USAGE_CONSUMER_*` env vars and CLI flags.

CLI flags win over environment variables, which win over defaults. Every field maps to one env
var (`USAGE_CONSUMER_<FIELD>`) and one flag (`--<field-with-dashes>`); `ConfigError` names both.
librdkafka keys are rendered here and nowhere else.

The SASL password comes from `sasl_password` (env, best from a Kubernetes secretKeyRef) or from
`sasl_password_file`, a file such as a key of a Kubernetes Secret mounted as a volume. Either way
it is held as a SecretStr: repr, str and model dumps show it masked, and only the librdkafka
configs (`consumer_config`, `producer_config`) hold it in clear. The files the security settings
name (password, CA) are checked here, so a missing one stops start-up naming the setting.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumer.errors import ConfigError
from consumer.logs import KAFKA_LOGGER

__all__ = ["ENV_PREFIX", "Settings", "load_settings", "parse_duration", "setting_label"]

ENV_PREFIX = "USAGE_CONSUMER_"

# Keys a user may not pass through `kafka_options`: the worker owns them (delivery guarantee), or
# they are credentials that must stay SecretStr.
_OWNED = "the worker owns it (offsets are committed only once events are recorded)"
_CREDENTIAL_HINT = "use sasl_password or sasl_password_file, so the credential stays secret"
_RESERVED_KAFKA_KEYS: Mapping[str, str] = {
    "group.id": "use group_id",
    "bootstrap.servers": "use bootstrap_servers",
    "enable.auto.commit": _OWNED,
    "enable.auto.offset.store": _OWNED,
    "sasl.password": _CREDENTIAL_HINT,
    "ssl.key.password": _CREDENTIAL_HINT,
    "sasl.oauthbearer.client.secret": _CREDENTIAL_HINT,
}


# librdkafka's default; it is also the rebalance timeout a revocation must fit in.
_MAX_POLL_INTERVAL_MS = 300_000
# librdkafka consumer properties (CONFIGURATION.md, "C") kept out of the dead-letter producer.
_CONSUMER_ONLY_KEYS = frozenset(
    {
        "auto.offset.reset",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "auto.commit.interval.ms",
        "isolation.level",
        "enable.partition.eof",
        "check.crcs",
        "queued.min.messages",
        "queued.max.messages.kbytes",
        "coordinator.query.interval.ms",
        "max.partition.fetch.bytes",
        "client.rack",
    }
)
# Group settings that KIP-848 (group.protocol=consumer) moves to the broker.
_CLASSIC_ONLY_KEYS = frozenset(
    {"partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms"}
)
# SASL mechanisms that authenticate with a user name and a password.
_PASSWORD_MECHANISMS = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"})
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
# Far above any real password; a bigger file is the wrong file.
_MAX_PASSWORD_FILE_BYTES = 65_536


def _read_password_file(path: str) -> str:
    """The password in `path`, without its trailing line break; ValueError if unusable.

    The message names the file, never its content."""
    file = Path(path)
    if file.is_dir():
        raise ValueError(f"password file {path} is a directory, not a file")
    if not file.is_file():
        raise ValueError(f"password file {path} does not exist")
    try:
        with file.open("rb") as handle:
            data = handle.read(_MAX_PASSWORD_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"password file {path} cannot be read: {exc.strerror}") from None
    if len(data) > _MAX_PASSWORD_FILE_BYTES:
        raise ValueError(f"password file {path} is over {_MAX_PASSWORD_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"password file {path} is not UTF-8 text") from None
    # `echo secret > file` and editors add a line break; a Secret made with --from-literal has
    # none. Only line breaks go: spaces could be part of the password.
    password = text.rstrip("\r\n")
    if not password:
        raise ValueError(f"password file {path} is empty")
    return password


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MAX_TTL_S = 30 * 86400.0


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus-style duration (`90s`, `30m`, `1h30m`, `250ms`) or a number."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"{text!r} is not a duration: use seconds, or e.g. 90s, 30m, 6h, 1h30m")
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


class Settings(BaseSettings):
    """Everything the worker can be told. Frozen: built once at start-up and handed down."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        case_sensitive=False,
    )

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", min_length=1, description="Kafka bootstrap servers."
    )
    topic: str = Field(
        default="llm-usage", min_length=1, max_length=249, description="Topic of usage events."
    )
    group_id: str = Field(default="llm-usage-consumer", min_length=1, description="Consumer group.")
    dlq_topic: str = Field(
        default="",
        max_length=249,
        description="Dead-letter topic for invalid events; empty means '<topic>.dlq'.",
    )
    client_id: str = Field(
        default_factory=lambda: f"usage-consumer-{socket.gethostname()}",
        description="Kafka client.id, shown in broker logs and group descriptions.",
    )

    metrics_host: str = Field(default="0.0.0.0", description="Address the HTTP server binds.")
    metrics_port: int = Field(default=9464, ge=0, le=65535, description="Port of /metrics.")
    web_config_file: str = Field(
        default="",
        description="TLS and basic auth of the HTTP server, in the format of Prometheus "
        "exporters' web configuration file (tls_server_config, basic_auth_users with bcrypt "
        "hashes); empty: plain HTTP, no auth.",
    )

    batch_size: int = Field(default=1000, ge=1, le=100_000, description="Max events per batch.")
    batch_wait_ms: int = Field(
        default=200, ge=0, le=60_000, description="Max time to fill a batch, in ms."
    )
    max_message_bytes: int = Field(
        default=65_536,
        ge=1024,
        le=10_485_760,
        description="Messages larger than this are dead-lettered as too_large.",
    )
    cardinality_limit: int = Field(
        default=10_000,
        ge=100,
        le=1_000_000,
        description=(
            "Attribute sets kept per metric; further sets fold into the "
            'otel_metric_overflow="true" series.'
        ),
    )
    create_topics: bool = Field(
        default=False,
        description=(
            "Create the topic and the dead-letter topic at start-up when missing (development; "
            "in production create them with `usage-consumer topics create`)."
        ),
    )
    unknown_fields: Literal["ignore", "reject"] = Field(
        default="ignore",
        description=(
            "Fields of an event the schema does not know: ignore them (counted per name in "
            "usage_consumer_unknown_fields_total) or reject the event to the DLQ as "
            "unknown_field."
        ),
    )
    series_idle_ttl: float = Field(
        default=0.0,
        description=(
            "Remove a usage series that got no update for this long (a duration: 90s, 30m, 6h, "
            "1h30m, or seconds), freeing its cardinality slot; in scrape commit mode only once "
            "a completed scrape has its last value. A set that comes back starts from zero (a "
            "counter reset). 0: never."
        ),
    )
    dlq_timeout_ms: int = Field(
        default=30_000,
        ge=1000,
        le=600_000,
        description="How long the DLQ producer tries one message before reporting failure.",
    )
    commit_mode: Literal["scrape", "record"] = Field(
        default="scrape",
        description=(
            "scrape: commit an offset only once a completed /metrics response covered it "
            "(nothing lost on a crash); record: commit once recorded (a crash loses the "
            "increments since the last scrape)."
        ),
    )
    max_unscraped_events: int = Field(
        default=1_000_000,
        ge=1,
        description="Pause reading when more recorded events than this wait for a scrape.",
    )
    max_unscraped_age_ms: int = Field(
        default=300_000,
        ge=1000,
        description="Pause reading when the oldest event waiting for a scrape is this old.",
    )
    handover_timeout_ms: int = Field(
        default=30_000,
        ge=0,
        description=(
            "On revocation, how long to wait for a scrape to cover the partitions before "
            "committing and releasing them; must stay below max.poll.interval.ms."
        ),
    )
    metrics_profile: str = Field(
        default="llm",
        description=(
            "Which metrics the usage events become: llm (the seed tracker's llm.* instruments), "
            "genai (the OpenTelemetry GenAI client metrics) or both."
        ),
    )
    group_protocol: Literal["classic", "consumer"] = Field(
        default="classic",
        description=(
            "classic (cooperative-sticky assignment, any broker) or consumer "
            "(KIP-848, Kafka 4.x brokers)."
        ),
    )
    statistics_interval_ms: int = Field(
        default=5000, ge=0, le=600_000, description="librdkafka statistics (consumer lag) period."
    )

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How to reach Kafka: SASL_SSL (authenticated and encrypted) for a secured "
        "cluster.",
    )
    sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] = Field(
        default="", description="SASL mechanism; required with SASL_SSL and SASL_PLAINTEXT."
    )
    sasl_username: str = Field(default="", description="SASL user name.")
    sasl_password: SecretStr = Field(
        default=SecretStr(""),
        description="SASL password (masked in every dump); or use sasl_password_file.",
    )
    sasl_password_file: str = Field(
        default="",
        description="File holding the SASL password, e.g. a key of a Kubernetes Secret mounted "
        "as a volume; its trailing line break is ignored. Read once at start-up.",
    )
    ssl_ca_location: str = Field(
        default="",
        description="PEM file (or directory) of the CA certificates that signed the brokers' "
        "certificates; empty: the system's CA store.",
    )
    kafka_options: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra librdkafka settings for consumer and producer "
            "(env: JSON object; CLI: --kafka-option key=value, repeatable)."
        ),
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="Log lines as JSON or text; auto: JSON unless stderr is a terminal.",
    )

    # The password read from sasl_password_file; private, so no dump or repr shows it.
    _file_password: SecretStr = PrivateAttr(default=SecretStr(""))

    @field_validator("ssl_ca_location")
    @classmethod
    def _ca_is_readable(cls, value: str) -> str:
        if not value or value == "probe":  # librdkafka's "probe": the system's CA locations
            return value
        path = Path(value)
        if path.is_dir():
            return value  # a directory of hashed CA certificates, as OpenSSL reads them
        if not path.exists():
            raise ValueError(f"CA file {value} does not exist")
        try:
            with path.open("rb") as handle:
                head = handle.read(1_048_576)
        except OSError as exc:
            raise ValueError(f"CA file {value} cannot be read: {exc.strerror}") from None
        if _PEM_CERTIFICATE not in head:
            raise ValueError(
                f"CA file {value} holds no PEM certificate ({_PEM_CERTIFICATE.decode()} ... lines)"
            )
        return value

    @field_validator("series_idle_ttl", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("series_idle_ttl")
    @classmethod
    def _ttl_range(cls, value: float) -> float:
        if value != 0 and not 1 <= value <= _MAX_TTL_S:
            raise ValueError(f"must be 0 (never) or between 1s and 30d, got {value:g}s")
        return value

    @field_validator("sasl_password_file")
    @classmethod
    def _password_file_is_readable(cls, value: str) -> str:
        if value:
            _read_password_file(value)
        return value

    @field_validator("kafka_options")
    @classmethod
    def _no_reserved_keys(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(set(_RESERVED_KAFKA_KEYS).intersection(value))
        if reserved:
            raise ValueError(
                "; ".join(
                    f"{key} cannot be set here: {_RESERVED_KAFKA_KEYS[key]}" for key in reserved
                )
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.dead_letter_topic == self.topic:
            raise ValueError("dlq_topic must differ from topic")
        poll_interval = int(self.kafka_options.get("max.poll.interval.ms", _MAX_POLL_INTERVAL_MS))
        if self.handover_timeout_ms >= poll_interval:
            raise ValueError(
                f"handover_timeout_ms ({self.handover_timeout_ms}) must be below "
                f"max.poll.interval.ms ({poll_interval}), the group's rebalance timeout"
            )
        if self.group_protocol == "consumer":
            clashing = sorted(_CLASSIC_ONLY_KEYS.intersection(self.kafka_options))
            if clashing:
                raise ValueError(
                    f"{', '.join(clashing)} cannot be set with group_protocol=consumer "
                    "(KIP-848 moves them to the broker)"
                )
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError("sasl_mechanism is required when security_protocol is SASL_*")
        self._check_credentials()
        return self

    def _check_credentials(self) -> None:
        from_env = self.sasl_password.get_secret_value()
        if from_env and self.sasl_password_file:
            raise ValueError(
                "sasl_password and sasl_password_file are both set: keep one source of the password"
            )
        if self.sasl_password_file:
            self._file_password = SecretStr(_read_password_file(self.sasl_password_file))
        uses_sasl = self.security_protocol.startswith("SASL")
        if self.sasl_mechanism and not uses_sasl:
            raise ValueError(
                f"sasl_mechanism {self.sasl_mechanism} has no effect with security_protocol "
                f"{self.security_protocol}: use SASL_SSL"
            )
        if uses_sasl and self.sasl_mechanism in _PASSWORD_MECHANISMS:
            if not self.sasl_username:
                raise ValueError(f"sasl_username is required with {self.sasl_mechanism}")
            if not self.sasl_secret().get_secret_value():
                raise ValueError(
                    f"a password is required with {self.sasl_mechanism}: set "
                    "sasl_password_file or sasl_password"
                )
        if self.ssl_ca_location and "SSL" not in self.security_protocol:
            raise ValueError(
                f"ssl_ca_location is set but security_protocol {self.security_protocol} does "
                "not use TLS: use SASL_SSL or SSL"
            )

    def sasl_secret(self) -> SecretStr:
        """The SASL password, from sasl_password or sasl_password_file (masked when printed)."""
        return self.sasl_password if self.sasl_password.get_secret_value() else self._file_password

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"

    def _common_kafka_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
            # librdkafka's lines through the worker's logger: one format, one rate limit.
            "logger": logging.getLogger(KAFKA_LOGGER),
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_secret().get_secret_value()
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        config.update(self.kafka_options)
        return config

    def consumer_config(self) -> dict[str, Any]:
        """librdkafka consumer settings. Contains the password: never log the result."""
        config = self._common_kafka_config()
        config.update(
            {
                "group.id": self.group_id,
                # Offsets are stored by the worker only once an event is recorded or
                # dead-lettered, and committed explicitly: see consumer.pipeline.ledger.
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": config.get("auto.offset.reset", "earliest"),
                "group.protocol": self.group_protocol,
                "statistics.interval.ms": self.statistics_interval_ms,
            }
        )
        # librdkafka prefetches up to 64 MiB per consumer by default; a worker that records
        # far slower than it can fetch gains nothing from more than a few batches in hand.
        config.setdefault("queued.max.messages.kbytes", 16_384)
        # Once that queue is full, librdkafka waits fetch.queue.backoff.ms (1 s by default)
        # before fetching again; a worker drains 16 MiB in under a second and would then
        # starve (measured: 45,000 events/s with the default, 80,000+ with 50 ms).
        config.setdefault("fetch.queue.backoff.ms", 50)
        if self.group_protocol == "classic":
            # Cooperative: a rebalance moves only the partitions that change owner, and the
            # others keep flowing while the moved ones are handed over.
            config.setdefault("partition.assignment.strategy", "cooperative-sticky")
        return config

    def producer_config(self) -> dict[str, Any]:
        """librdkafka settings of the dead-letter producer."""
        config = {
            k: v
            for k, v in self._common_kafka_config().items()
            # Consumer-only keys would make the producer warn on every start.
            if k not in _CONSUMER_ONLY_KEYS and not k.startswith(("fetch.", "group."))
        }
        config.setdefault("linger.ms", 5)
        # A dead letter counts as delivered only once every in-sync replica has it.
        config.update(
            {
                "acks": "all",
                "enable.idempotence": True,
                "message.timeout.ms": self.dlq_timeout_ms,
            }
        )
        return config

    def admin_config(self) -> dict[str, Any]:
        """librdkafka settings of an admin client (replay): connection and security only."""
        return {
            k: v
            for k, v in self._common_kafka_config().items()
            if k not in _CONSUMER_ONLY_KEYS and not k.startswith(("fetch.", "group."))
        }

    def redacted(self) -> dict[str, Any]:
        """The settings as they may be logged: secrets stay masked."""
        return self.model_dump(mode="json")


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the settings from the environment plus CLI overrides, or raise ConfigError."""
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else _named_in(str(first["msg"]))
        raise ConfigError(setting_label(field), _describe(first)) from None


def _named_in(message: str) -> str:
    """The setting a cross-field check's message starts from (its first setting name)."""
    found = [(message.find(name), name) for name in Settings.model_fields if name in message]
    return min(found)[1] if found else "settings"


def setting_label(field: str) -> str:
    """How errors name a setting: its name, its environment variable and its flag."""
    if field not in Settings.model_fields:
        return field
    flag = (
        "--kafka-option KEY=VALUE" if field == "kafka_options" else f"--{field.replace('_', '-')}"
    )
    return f"{field} (env {ENV_PREFIX}{field.upper()}, flag {flag})"


def _describe(error: Any) -> str:
    message = str(error["msg"])
    secret = bool(error["loc"]) and error["loc"][0] == "sasl_password"
    if (
        "input" in error
        and error["type"] != "missing"
        and not isinstance(error["input"], dict)
        and not secret  # never echo what might be a password
    ):
        return f"{message} (got {error['input']!r})"
    return message
