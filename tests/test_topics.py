"""Topic administration on a real broker: create (idempotent), describe, and the checks that stop
the worker and `usage-consumer produce` with one line when a topic is missing, hidden by an ACL,
or the broker does not answer.

The checks' 10 s bound is behaviour (the worker and the producer must not hang), so the tests
measure it; the ACL cases run on a SASL_SSL broker with the StandardAuthorizer of their own.
"""

from __future__ import annotations

import io
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from consumer.cli import main
from consumer.devtools.broker import SecureListener, start_broker, stop_broker
from consumer.devtools.produce import Publisher
from consumer.errors import AuthenticationError, AuthorizationError, ConfigError
from consumer.kafka.topics import (
    BrokerUnreachableError,
    MissingTopicError,
    TopicOutcome,
    check_produce_topic,
    check_topics,
    create_command,
    create_topics,
    describe_command,
)
from consumer.settings import load_settings
from tests import certs
from tests.conftest import TopicFactory
from tests.harness import WorkerProcess

pytestmark = pytest.mark.integration

CHECK_BOUND_S = 10.0


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _partitions(admin: AdminClient, topic: str) -> int:
    """The topic's partition count, once the broker's metadata has the new topic's leaders."""
    deadline = time.monotonic() + 10
    while True:
        metadata = admin.list_topics(topic, timeout=10).topics[topic]
        if (metadata.error is None and metadata.partitions) or time.monotonic() > deadline:
            return len(metadata.partitions)
        time.sleep(0.1)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens on it any more


# ---------------------------------------------------------------------------------------------
# create


def test_create_is_idempotent_and_reports_what_exists(
    kafka_bootstrap: str, admin: AdminClient
) -> None:
    topic = _name("create")
    config = {"bootstrap.servers": kafka_bootstrap}
    first = io.StringIO()
    outcomes = create_topics(config, topic, partitions=4, dlq_partitions=2, out=first)
    assert outcomes == [
        TopicOutcome(topic, "topic", True, 4, 1, 4, 1),
        TopicOutcome(f"{topic}.dlq", "dead-letter topic", True, 2, 1, 2, 1),
    ]
    assert first.getvalue() == (
        f"created topic {topic}: 4 partitions, replication factor 1\n"
        f"created dead-letter topic {topic}.dlq: 2 partitions, replication factor 1\n"
    )
    assert _partitions(admin, topic) == 4
    assert _partitions(admin, f"{topic}.dlq") == 2

    again = io.StringIO()
    outcomes = create_topics(config, topic, partitions=6, dlq_partitions=2, out=again)
    assert [(o.created, o.partitions) for o in outcomes] == [(False, 4), (False, 2)]
    assert again.getvalue() == (
        f"topic {topic} exists: 4 partitions, replication factor 1\n"
        f"warning: topic {topic} has 4 partitions, not 6 as asked; left unchanged\n"
        f"dead-letter topic {topic}.dlq exists: 2 partitions, replication factor 1\n"
    )
    assert _partitions(admin, topic) == 4  # left as it was


def test_create_command_makes_the_missing_dlq_with_the_defaults(
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    admin: AdminClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = topic_factory(12, with_dlq=False)
    settings = load_settings({"bootstrap_servers": kafka_bootstrap, "topic": topic})
    assert create_command(settings) == 0
    captured = capsys.readouterr()
    assert captured.out == (
        f"topic {topic} exists: 12 partitions, replication factor 1\n"
        f"created dead-letter topic {topic}.dlq: 1 partition, replication factor 1\n"
    )
    assert captured.err == ""
    assert _partitions(admin, f"{topic}.dlq") == 1


def test_create_refuses_more_replicas_than_brokers(kafka_bootstrap: str) -> None:
    topic = _name("replicas")
    with pytest.raises(ConfigError) as raised:
        create_topics({"bootstrap.servers": kafka_bootstrap}, topic, replication=3)
    assert str(raised.value).startswith(
        f"invalid setting --replication-factor: topic {topic} cannot get 3 replicas ["
    )


# ---------------------------------------------------------------------------------------------
# describe


def test_describe_prints_both_topics_and_names_the_command_for_the_missing_one(
    kafka_bootstrap: str, admin: AdminClient, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = _name("describe")
    configs = {
        "retention.ms": "3600000",
        "cleanup.policy": "delete",
        "max.message.bytes": "2097152",
        "min.insync.replicas": "1",
    }
    for future in admin.create_topics([NewTopic(topic, 3, 1, config=configs)]).values():
        future.result(timeout=30)
    settings = load_settings({"bootstrap_servers": kafka_bootstrap, "topic": topic})
    assert describe_command(settings) == 1
    dlq = f"{topic}.dlq"
    pad = " " * (len(dlq) - len(topic))
    assert capsys.readouterr().out == (
        f"role   topic{' ' * (len(dlq) - 5)}  exists  partitions  replication  retention.ms  "
        "cleanup.policy  max.message.bytes  min.insync.replicas\n"
        f"topic  {topic}{pad}  yes     3           1            3600000       "
        "delete          2097152            1\n"
        f"dlq    {dlq}  no      -           -            -             "
        "-               -                  -\n"
        f"create the missing topics with: usage-consumer topics create --bootstrap-servers "
        f"{kafka_bootstrap} --topic {topic}\n"
    )


# ---------------------------------------------------------------------------------------------
# check_topics: the worker's check before it joins


def test_check_passes_and_counts_partitions(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(3)
    config = {"bootstrap.servers": kafka_bootstrap}
    assert check_topics(config, topic, f"{topic}.dlq") == {topic: 3, f"{topic}.dlq": 1}


def test_check_names_a_missing_topic_and_the_command(kafka_bootstrap: str) -> None:
    topic = _name("absent")
    config = {"bootstrap.servers": kafka_bootstrap}
    with pytest.raises(MissingTopicError) as raised:
        check_topics(config, topic, f"{topic}.dlq")
    assert str(raised.value) == (
        f"topics {topic} and {topic}.dlq (dead letters) do not exist on the cluster at "
        f"{kafka_bootstrap}; create them with: usage-consumer topics create "
        f"--bootstrap-servers {kafka_bootstrap} --topic {topic}"
    )
    assert raised.value.missing == (topic, f"{topic}.dlq")


def test_check_names_a_missing_dlq(kafka_bootstrap: str, topic_factory: TopicFactory) -> None:
    topic = topic_factory(2, with_dlq=False)
    config = {"bootstrap.servers": kafka_bootstrap}
    with pytest.raises(MissingTopicError) as raised:
        check_topics(config, topic, f"{topic}.dlq")
    assert str(raised.value) == (
        f"dead-letter topic {topic}.dlq does not exist on the cluster at {kafka_bootstrap}; "
        f"create it with: usage-consumer topics create --bootstrap-servers {kafka_bootstrap} "
        f"--topic {topic}"
    )
    # A DLQ of another name is passed on to the command.
    with pytest.raises(MissingTopicError) as raised:
        check_topics(config, topic, "dead-letters")
    assert str(raised.value) == (
        f"dead-letter topic dead-letters does not exist on the cluster at {kafka_bootstrap}; "
        f"create it with: usage-consumer topics create --bootstrap-servers {kafka_bootstrap} "
        f"--topic {topic} --dlq-topic dead-letters"
    )


def test_a_worker_with_create_topics_makes_both_and_runs(
    kafka_bootstrap: str, group_id: str, tmp_path: Path
) -> None:
    topic = _name("created-by-worker")
    worker = WorkerProcess(kafka_bootstrap, topic, group_id, tmp_path, "--create-topics", "true")
    try:
        worker.start().wait_ready()
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        assert (_partitions(admin, topic), _partitions(admin, f"{topic}.dlq")) == (12, 1)
        assert f"created topic {topic}: 12 partitions, replication factor 1" in worker.log()
    finally:
        worker.stop()


def test_check_gives_up_on_an_unreachable_broker_within_10_s() -> None:
    bootstrap = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerUnreachableError) as raised:
        check_topics({"bootstrap.servers": bootstrap}, "usage", "usage.dlq")
    elapsed = time.monotonic() - started
    assert elapsed < CHECK_BOUND_S
    assert str(raised.value) == (
        f"the broker at {bootstrap} could not be reached within 10 s: check bootstrap_servers "
        "(env USAGE_CONSUMER_BOOTSTRAP_SERVERS, flag --bootstrap-servers) and that the broker "
        "is running"
    )


# ---------------------------------------------------------------------------------------------
# produce: the same check before the first message


def test_produce_fails_fast_on_a_missing_topic(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = _name("nl-usage")
    argv = ["produce", "--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--count", "10"]
    started = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - started < CHECK_BOUND_S
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"usage-consumer: topic {topic} does not exist on the cluster at {kafka_bootstrap}; "
        f"create it with: usage-consumer topics create --bootstrap-servers {kafka_bootstrap} "
        f"--topic {topic}\n"
    )
    with pytest.raises(MissingTopicError):
        Publisher({"bootstrap.servers": kafka_bootstrap}, topic)


# ---------------------------------------------------------------------------------------------
# ACLs: a SASL_SSL broker with the StandardAuthorizer


@dataclass(frozen=True)
class SecureCluster:
    plain: str  # PLAINTEXT, User:ANONYMOUS (a super user)
    secure: str
    ca_file: Path
    passwords: dict[str, str]


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    base = tmp_path_factory.mktemp("topics-acl")
    ca = certs.authority("topics test CA")
    key, cert = certs.issue(ca, "127.0.0.1", server=True)
    keystore = base / "keystore.pem"
    keystore.write_bytes(certs.key_pem(key) + certs.cert_pem(cert) + ca.pem())
    ca_file = base / "ca.pem"
    ca_file.write_bytes(ca.pem())
    passwords = {user: f"pw-{secrets.token_urlsafe(12)}" for user in ("nobody", "reader")}
    data_dir = base / "kafka"
    info = start_broker(
        data_dir,
        secure=SecureListener(keystore=keystore, scram_users=passwords, authorizer=True),
    )
    try:
        assert info.secure_bootstrap is not None
        yield SecureCluster(info.bootstrap, info.secure_bootstrap, ca_file, passwords)
    finally:
        stop_broker(data_dir)


def _secure_config(cluster: SecureCluster, user: str, password: str = "") -> dict[str, Any]:
    settings = load_settings(
        {
            "bootstrap_servers": cluster.secure,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": user,
            "sasl_password": password or cluster.passwords[user],
            "ssl_ca_location": str(cluster.ca_file),
        }
    )
    return settings.admin_config()


def _acl_topics(cluster: SecureCluster, reader_may_read: bool) -> tuple[str, str]:
    admin = AdminClient({"bootstrap.servers": cluster.plain})
    topic = _name("acl")
    dlq = f"{topic}.dlq"
    for future in admin.create_topics([NewTopic(topic, 1, 1), NewTopic(dlq, 1, 1)]).values():
        future.result(timeout=30)
    if reader_may_read:
        binding = AclBinding(
            ResourceType.TOPIC,
            topic,
            ResourcePatternType.LITERAL,
            "User:reader",
            "*",
            AclOperation.READ,
            AclPermissionType.ALLOW,
        )
        for future in admin.create_acls([binding]).values():
            future.result(timeout=30)
    return topic, dlq


def test_check_names_the_acl_a_hidden_topic_needs(secure_cluster: SecureCluster) -> None:
    topic, dlq = _acl_topics(secure_cluster, reader_may_read=True)
    denied = "[Broker: Topic authorization failed]"

    with pytest.raises(AuthorizationError) as raised:
        check_topics(_secure_config(secure_cluster, "nobody"), topic, dlq)
    assert str(raised.value) == (
        f"TOPIC_AUTHORIZATION_FAILED on topic {topic}: User:nobody needs READ and DESCRIBE on "
        f"topic {topic} {denied}"
    )

    # READ on the topic (which implies DESCRIBE), nothing on the DLQ.
    with pytest.raises(AuthorizationError) as raised:
        check_topics(_secure_config(secure_cluster, "reader"), topic, dlq)
    assert str(raised.value) == (
        f"DLQ write denied: TOPIC_AUTHORIZATION_FAILED on topic {dlq}: User:reader needs WRITE "
        f"and DESCRIBE on topic {dlq} {denied}"
    )

    with pytest.raises(AuthorizationError) as raised:
        check_produce_topic(_secure_config(secure_cluster, "nobody"), topic)
    assert str(raised.value) == (
        f"TOPIC_AUTHORIZATION_FAILED on topic {topic}: User:nobody needs WRITE and DESCRIBE on "
        f"topic {topic} {denied}"
    )


def test_check_reports_a_refused_login_at_once(secure_cluster: SecureCluster) -> None:
    wrong = f"wrong-{secrets.token_urlsafe(8)}"
    config = _secure_config(secure_cluster, "nobody", wrong)
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as raised:
        check_topics(config, "usage", "usage.dlq")
    assert time.monotonic() - started < CHECK_BOUND_S
    assert str(raised.value).startswith(
        "authentication failed for user 'nobody' with SASL SCRAM-SHA-512: check sasl_username "
        "and the password (sasl_password or sasl_password_file) ["
    )
