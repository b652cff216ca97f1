"""The exceptions llm-usage-consumer raises, under one root.

    UsageConsumerError
    ├── ConfigError          a setting is invalid; names the setting
    ├── BrokerError          the embedded local broker could not start or stop
    └── KafkaOperationError  a Kafka call failed; carries topic, partition and offset
        ├── ConsumeError     the consumer reported a fatal error
        └── CommitError      committing offsets failed

An invalid *event* is not an exception: the validate stage returns a `Rejection` and the event
goes to the dead-letter topic. Exceptions are for the worker's own failures.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "CommitError",
    "ConfigError",
    "ConsumeError",
    "KafkaOperationError",
    "UsageConsumerError",
]


class UsageConsumerError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(UsageConsumerError):
    """A setting is invalid. The message names the setting (env var and CLI flag)."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"invalid setting {setting}: {problem}")


class BrokerError(UsageConsumerError):
    """The embedded local Kafka broker could not be started, reached or stopped."""


class KafkaOperationError(UsageConsumerError):
    """A Kafka operation failed. Carries where, when it is known."""

    def __init__(
        self,
        message: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        where = ""
        if topic is not None:
            where = f" [{topic}"
            if partition is not None:
                where += f"/{partition}"
            if offset is not None:
                where += f"@{offset}"
            where += "]"
        super().__init__(message + where)


class ConsumeError(KafkaOperationError):
    """The consumer reported an error it cannot recover from."""


class CommitError(KafkaOperationError):
    """Committing offsets failed."""
