"""The worker's settings: one frozen model, read from `USAGE_CONSUMER_*` env vars and CLI flags.

CLI flags win over environment variables, which win over defaults. Every field maps to one env
var (`USAGE_CONSUMER_<FIELD>`) and one flag (`--<field-with-dashes>`); `ConfigError` names both.
librdkafka keys are rendered here and nowhere else.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumer.errors import ConfigError

__all__ = ["ENV_PREFIX", "Settings", "load_settings"]

ENV_PREFIX = "USAGE_CONSUMER_"

# Keys a user may not pass through `kafka_options`: the worker owns them (delivery guarantee), or
# they are credentials that must stay SecretStr.
_RESERVED_KAFKA_KEYS = frozenset(
    {
        "group.id",
        "bootstrap.servers",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "sasl.password",
        "ssl.key.password",
        "sasl.oauthbearer.client.secret",
    }
)


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
    dlq_timeout_ms: int = Field(
        default=30_000,
        ge=1000,
        le=600_000,
        description="How long the DLQ producer tries one message before reporting failure.",
    )
    statistics_interval_ms: int = Field(
        default=5000, ge=0, le=600_000, description="librdkafka statistics (consumer lag) period."
    )

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] = ""
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    ssl_ca_location: str = ""
    kafka_options: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra librdkafka settings for consumer and producer "
            "(env: JSON object; CLI: --kafka-option key=value, repeatable)."
        ),
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("kafka_options")
    @classmethod
    def _no_reserved_keys(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(_RESERVED_KAFKA_KEYS.intersection(value))
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)} cannot be set here: use the dedicated setting "
                "(credentials must come from sasl_password so they stay secret)"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.dead_letter_topic == self.topic:
            raise ValueError("dlq_topic must differ from topic")
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError("sasl_mechanism is required when security_protocol is SASL_*")
        return self

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"

    def _common_kafka_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password.get_secret_value()
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
                # dead-lettered, and committed explicitly: see consumer.commit.
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": config.get("auto.offset.reset", "earliest"),
                "partition.assignment.strategy": config.get(
                    "partition.assignment.strategy", "cooperative-sticky"
                ),
                "statistics.interval.ms": self.statistics_interval_ms,
            }
        )
        return config

    def producer_config(self) -> dict[str, Any]:
        """librdkafka settings of the dead-letter producer."""
        config = {
            k: v
            for k, v in self._common_kafka_config().items()
            # Consumer-only keys would make the producer warn on every start.
            if k not in {"auto.offset.reset", "partition.assignment.strategy", "group.protocol"}
        }
        config.update(
            {
                "acks": "all",
                "enable.idempotence": True,
                "message.timeout.ms": self.dlq_timeout_ms,
                "linger.ms": 5,
            }
        )
        return config

    def redacted(self) -> dict[str, Any]:
        """The settings as they may be logged: secrets stay masked."""
        return self.model_dump(mode="json")


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the settings from the environment plus CLI overrides, or raise ConfigError."""
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        if field in Settings.model_fields:
            setting = f"{field} (env {ENV_PREFIX}{field.upper()}, flag --{field.replace('_', '-')})"
        else:
            setting = field
        raise ConfigError(setting, _describe(first)) from None


def _describe(error: Any) -> str:
    message = str(error["msg"])
    if "input" in error and error["type"] != "missing" and not isinstance(error["input"], dict):
        return f"{message} (got {error['input']!r})"
    return message
