"""The exceptions llm-usage-consumer raises, under one root.

    UsageConsumerError
    ├── ConfigError          a setting is invalid; names the setting
    ├── BrokerError          the embedded local broker could not start or stop
    └── KafkaOperationError  a Kafka call failed; carries topic, partition and offset
        ├── ConsumeError     the consumer reported a fatal error
        │   └── AccessError  the cluster refused this worker; retrying cannot help
        │       ├── AuthenticationError  SASL authentication failed (wrong user or password)
        │       ├── TlsError             the TLS handshake failed (untrusted broker certificate)
        │       └── AuthorizationError   an ACL is missing (topic or group)
        └── CommitError      committing offsets failed

An invalid *event* is not an exception: the validate stage returns a `Rejection` and the event
goes to the dead-letter topic. Exceptions are for the worker's own failures.
"""

from __future__ import annotations

__all__ = [
    "AccessError",
    "AuthenticationError",
    "AuthorizationError",
    "BrokerError",
    "CommitError",
    "ConfigError",
    "ConsumeError",
    "KafkaOperationError",
    "TlsError",
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


class AccessError(ConsumeError):
    """The cluster refused this worker's credentials, certificate or permissions.

    librdkafka reports these as transient and would retry for ever; the worker stops instead,
    with one line saying what to fix. The message never holds a password.
    """


class AuthenticationError(AccessError):
    """SASL authentication failed: wrong user name or password, or a mechanism the broker does
    not offer."""


class TlsError(AccessError):
    """The TLS handshake with a broker failed, typically because the broker's certificate is not
    signed by the configured CA."""


class AuthorizationError(AccessError):
    """The broker denied an operation for lack of an ACL; the message names the resource and
    the operation the worker's principal needs."""


class CommitError(KafkaOperationError):
    """Committing offsets failed."""
