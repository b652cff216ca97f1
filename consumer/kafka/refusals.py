"""The cluster's refusals, named: which librdkafka errors mean "fix the configuration".

librdkafka reports a failed SASL authentication, a failed TLS handshake and a missing ACL as
transient errors and retries them for ever. `access_error` recognises them and returns the
`AccessError` that says what to fix (the user, the CA file, the ACL), for the consumer
(consumer.kafka.source) and the dead-letter producer (consumer.pipeline.deadletter) alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError

from consumer.errors import AccessError, AuthenticationError, AuthorizationError, TlsError

__all__ = ["ClientIdentity", "access_error"]


@dataclass(frozen=True)
class ClientIdentity:
    """Who the consumer is, for messages about refusals. Holds no password."""

    username: str = ""
    mechanism: str = ""
    ca_location: str = ""
    group: str = ""
    topic: str = ""
    dlq_topic: str = ""

    @classmethod
    def of(cls, config: Mapping[str, Any], topic: str, dlq_topic: str = "") -> ClientIdentity:
        return cls(
            username=str(config.get("sasl.username", "")),
            mechanism=str(config.get("sasl.mechanism", "")),
            ca_location=str(config.get("ssl.ca.location", "")),
            group=str(config.get("group.id", "")),
            topic=topic,
            dlq_topic=dlq_topic,
        )


def access_error(
    err: KafkaError, who: ClientIdentity, topic: str | None = None
) -> AccessError | None:
    """The AccessError an error stands for, or None if retrying might help.

    _AUTHENTICATION: the broker rejected the SASL credentials (or the mechanism). _SSL: the TLS
    handshake failed, for a reason other than a dropped connection (librdkafka reports those as
    _TRANSPORT); older librdkafka versions report a failed certificate check as _TRANSPORT too,
    so that text counts as well. TOPIC/GROUP_AUTHORIZATION_FAILED: an ACL is missing. librdkafka
    marks them all retriable, but the broker gives the same answer until someone changes its
    configuration, as the Java client's non-retriable AuthenticationException and
    AuthorizationException say.

    The dead-letter producer's refusals map here too (with `who.dlq_topic` set): a topic
    authorization failure on the DLQ topic, and CLUSTER_AUTHORIZATION_FAILED, which is what an
    idempotent producer gets for its producer id when its principal may WRITE no topic at all
    (Kafka 3.0+, KIP-679: WRITE on a topic replaces the IDEMPOTENT_WRITE cluster ACL).
    """
    code = err.code()
    detail = err.str()
    if code == KafkaError._AUTHENTICATION:
        user = f"user {who.username!r}" if who.username else "the worker (no sasl_username)"
        mechanism = f" with SASL {who.mechanism}" if who.mechanism else ""
        return AuthenticationError(
            f"authentication failed for {user}{mechanism}: check sasl_username and the "
            f"password (sasl_password or sasl_password_file) [{detail}]"
        )
    verify_failed = "certificate verify failed" in detail
    if code == KafkaError._SSL or (code == KafkaError._TRANSPORT and verify_failed):
        if verify_failed and who.ca_location:
            return TlsError(
                f"the broker's certificate is not trusted by CA file {who.ca_location} "
                f"(ssl_ca_location): use the CA that signed the broker's certificate [{detail}]"
            )
        if verify_failed:
            return TlsError(
                "the broker's certificate is not trusted by the system's CA certificates: set "
                f"ssl_ca_location to the CA that signed it [{detail}]"
            )
        return TlsError(f"the TLS handshake with the broker failed [{detail}]")
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED and who.dlq_topic and topic == who.dlq_topic:
        return AuthorizationError(
            f"DLQ write denied: TOPIC_AUTHORIZATION_FAILED on topic {who.dlq_topic}: "
            f"{_principal(who)} needs WRITE and DESCRIBE on topic {who.dlq_topic} [{detail}]"
        )
    if code == KafkaError.CLUSTER_AUTHORIZATION_FAILED and who.dlq_topic:
        return AuthorizationError(
            f"DLQ write denied: CLUSTER_AUTHORIZATION_FAILED for the dead-letter producer's id: "
            f"{_principal(who)} needs WRITE and DESCRIBE on topic {who.dlq_topic} [{detail}]"
        )
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        name = topic or who.topic
        return AuthorizationError(
            f"TOPIC_AUTHORIZATION_FAILED on topic {name}: {_principal(who)} needs READ and "
            f"DESCRIBE on topic {name} [{detail}]"
        )
    if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
        return AuthorizationError(
            f"GROUP_AUTHORIZATION_FAILED on group {who.group}: {_principal(who)} needs READ on "
            f"group {who.group} [{detail}]"
        )
    return None


def _principal(who: ClientIdentity) -> str:
    return f"User:{who.username}" if who.username else "the worker's principal"
