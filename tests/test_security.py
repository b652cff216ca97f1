"""Kafka security on a real broker: SASL_SSL with SCRAM-SHA-512, TLS trust, ACLs, secrets.

One broker for the module (consumer.devtools.broker with a SecureListener): a SASL_SSL listener
whose certificate comes from a throwaway CA made here with `cryptography`, SCRAM users created when
the broker is formatted, and the StandardAuthorizer. Its PLAINTEXT listener (User:ANONYMOUS, a super
user) is the test's back door for producing and reading offsets; the worker only ever talks
SASL_SSL. Each ACL test uses its own user, so no test's grants leak into another's.

Every refusal must stop the worker within `REFUSAL_DEADLINE_S` with exit code 2 and one line
`usage-consumer: <what is wrong>`: no traceback, no retry loop. No password may appear in any
output: logs, error messages, HTTP bodies, settings dumps.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from consumer.devtools.broker import SecureListener, start_broker, stop_broker
from consumer.devtools.produce import Publisher, synthetic_events
from consumer.errors import ConfigError
from consumer.kafka.refusals import ClientIdentity, access_error
from consumer.settings import load_settings
from tests import certs
from tests.harness import (
    WorkerProcess,
    committed_offsets,
    end_offsets,
    expected_series,
    total,
    usage_series,
)

REFUSAL_DEADLINE_S = 30.0
MECHANISM = "SCRAM-SHA-512"
# Users with the documented ACLs (minus one, for the ACL tests); each gets its own password.
USERS = (
    "worker",
    "worker-file",
    "no-topic-read",
    "no-topic-access",
    "no-group-read",
    "no-dlq-write",
    "dlq-probe",
)
# Every HTTP path the worker serves; all are searched for the password.
HTTP_PATHS = ("/metrics", "/healthz", "/readyz", "/", "/status")


# ---------------------------------------------------------------------------------------------
# A throwaway PKI


def write_pki(directory: Path) -> tuple[Path, Path, Path]:
    """(broker keystore, the CA that signed it, another CA): PEM files in `directory`.

    The keystore holds the broker's unencrypted PKCS#8 key, its certificate (for IP 127.0.0.1,
    which librdkafka checks: ssl.endpoint.identification.algorithm=https) and the CA's."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = certs.authority("llm-usage-consumer test CA")
    key, broker_cert = certs.issue(ca, "127.0.0.1", server=True)
    keystore = directory / "broker-keystore.pem"
    keystore.write_bytes(certs.key_pem(key) + certs.cert_pem(broker_cert) + ca.pem())
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.pem())
    other_ca = directory / "other-ca.pem"
    other_ca.write_bytes(certs.authority("an unrelated CA").pem())
    return keystore, ca_file, other_ca


# ---------------------------------------------------------------------------------------------
# The secured broker


@dataclass(frozen=True)
class Cluster:
    plain: str  # PLAINTEXT, User:ANONYMOUS (a super user): the test's own door
    secure: str  # SASL_SSL: the worker's
    ca_file: Path
    other_ca: Path
    passwords: dict[str, str]
    admin: AdminClient  # over SASL_SSL, as the super user "admin"
    data_dir: Path


def _password() -> str:
    # Distinctive, so a search of any output for it cannot match by accident.
    return f"pw-{secrets.token_urlsafe(18)}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("secure-kafka")
    keystore, ca_file, other_ca = write_pki(base / "pki")
    passwords = {user: _password() for user in ("admin", *USERS)}
    data_dir = base / "kafka"
    info = start_broker(
        data_dir,
        secure=SecureListener(
            keystore=keystore,
            scram_users=passwords,
            mechanism=MECHANISM,
            authorizer=True,
            super_users=("admin",),
        ),
    )
    try:
        assert info.secure_bootstrap is not None
        admin = AdminClient(
            {
                "bootstrap.servers": info.secure_bootstrap,
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": MECHANISM,
                "sasl.username": "admin",
                "sasl.password": passwords["admin"],
                "ssl.ca.location": str(ca_file),
            }
        )
        yield Cluster(
            plain=info.bootstrap,
            secure=info.secure_bootstrap,
            ca_file=ca_file,
            other_ca=other_ca,
            passwords=passwords,
            admin=admin,
            data_dir=data_dir,
        )
    finally:
        stop_broker(data_dir)


def _topics(cluster: Cluster, name: str, partitions: int = 1) -> tuple[str, str, str]:
    """(topic, its DLQ topic, a group id), created fresh by the super user over SASL_SSL."""
    topic = f"{name}-{uuid.uuid4().hex[:8]}"
    dlq = f"{topic}.dlq"
    futures = cluster.admin.create_topics([NewTopic(topic, partitions, 1), NewTopic(dlq, 1, 1)])
    for future in futures.values():
        future.result(timeout=30)
    return topic, dlq, f"group-{topic}"


# The documented ACLs (docs/security.md), as (resource type, which name, operation).
DOCUMENTED_ACLS = (
    (ResourceType.TOPIC, "topic", AclOperation.READ),
    (ResourceType.TOPIC, "topic", AclOperation.DESCRIBE),
    (ResourceType.GROUP, "group", AclOperation.READ),
    (ResourceType.TOPIC, "dlq", AclOperation.WRITE),
    (ResourceType.TOPIC, "dlq", AclOperation.DESCRIBE),
)


def _grant(
    cluster: Cluster,
    user: str,
    names: dict[str, str],
    omit: frozenset[tuple[str, Any]] = frozenset(),
) -> None:
    """The documented ACLs for `user` on these resources, minus `omit` ((which, operation))."""
    bindings = [
        AclBinding(
            kind,
            names[which],
            ResourcePatternType.LITERAL,
            f"User:{user}",
            "*",
            operation,
            AclPermissionType.ALLOW,
        )
        for kind, which, operation in DOCUMENTED_ACLS
        if (which, operation) not in omit
    ]
    for future in cluster.admin.create_acls(bindings).values():
        future.result(timeout=30)


def _worker(
    cluster: Cluster,
    tmp_path: Path,
    topic: str,
    group: str,
    user: str,
    *,
    ca_file: Path | None = None,
    env: dict[str, str] | None = None,
) -> WorkerProcess:
    args = [
        "--security-protocol",
        "SASL_SSL",
        "--sasl-mechanism",
        MECHANISM,
        "--sasl-username",
        user,
        "--ssl-ca-location",
        str(ca_file or cluster.ca_file),
        "--handover-timeout-ms",
        "3000",
    ]
    password_env = {"USAGE_CONSUMER_SASL_PASSWORD": cluster.passwords[user]}
    return WorkerProcess(
        cluster.secure, topic, group, tmp_path, *args, env=env if env is not None else password_env
    )


def _produce(cluster: Cluster, topic: str, events: list[dict[str, Any]], invalid: int) -> None:
    publisher = Publisher({"bootstrap.servers": cluster.plain}, topic)
    publisher.send_events(iter(events))
    for n in range(invalid):
        publisher.send(b'{"schema_version": 1, "event_id": ' + str(n).encode())
    assert publisher.flush(30) == 0
    assert publisher.failed == []
    assert publisher.delivered == len(events) + invalid


@dataclass(frozen=True)
class Refusal:
    returncode: int
    seconds: float
    message: str  # the one `usage-consumer: ...` line
    log: str


def _refused(worker: WorkerProcess) -> Refusal:
    """Run a worker that must refuse to work: wait for it to stop on its own."""
    started = time.monotonic()
    worker.start()
    assert worker.proc is not None
    try:
        returncode = worker.proc.wait(REFUSAL_DEADLINE_S)
    except subprocess.TimeoutExpired:
        log = worker.log()
        worker.kill()
        pytest.fail(f"the worker was still running after {REFUSAL_DEADLINE_S:.0f} s:\n{log}")
    seconds = time.monotonic() - started
    worker.stop()  # closes its log file
    log = worker.log_path.read_text(errors="replace")
    lines = [line for line in log.splitlines() if line.startswith("usage-consumer: ")]
    assert len(lines) == 1, log
    assert "Traceback" not in log, log
    print(f"refused in {seconds:.1f} s, exit {returncode}: {lines[0]}")  # shown with -s
    return Refusal(returncode, seconds, lines[0], log)


def _assert_secret_absent(secret: str, texts: dict[str, str]) -> None:
    leaks = [where for where, text in texts.items() if secret in text]
    assert leaks == [], f"the password appears in {leaks}"


# ---------------------------------------------------------------------------------------------
# Working over SASL_SSL


@pytest.mark.integration
def test_worker_with_exactly_the_documented_acls_counts_everything_over_sasl_ssl(
    cluster: Cluster, tmp_path: Path
) -> None:
    topic, dlq, group = _topics(cluster, "secure", partitions=3)
    _grant(cluster, "worker", {"topic": topic, "group": group, "dlq": dlq})
    events = list(synthetic_events(300, seed=7))
    _produce(cluster, topic, events, invalid=2)
    expected = expected_series(events)

    worker = _worker(cluster, tmp_path, topic, group, "worker").start()
    worker.wait_ready()
    worker.wait_for(lambda: usage_series(worker.scrape()) == expected, 60, "counting everything")
    # Dead letters need WRITE on the DLQ (and the idempotent producer's id, KIP-679); the lag
    # gauge needs the committed offsets (group READ) and the watermarks (topic DESCRIBE).
    worker.wait_for(
        lambda: total(worker.scrape(), "usage_consumer_dead_letters_total") == 2, 30, "DLQ"
    )

    def caught_up() -> bool:
        series = worker.scrape()
        lags = {
            dict(labels)["partition"]: value
            for (name, labels), value in series.items()
            if name == "usage_consumer_consumer_lag"
        }
        return lags == {"0": 0.0, "1": 0.0, "2": 0.0}

    worker.wait_for(caught_up, 30, "lag 0 on all three partitions")
    series = worker.scrape()
    assert usage_series(series) == expected
    assert total(series, "usage_consumer_events_recorded_total") == 300
    assert total(series, "usage_consumer_dead_letter_failures_total") == 0
    # Committed by the worker over SASL_SSL (read back here over PLAINTEXT).
    worker.wait_for(
        lambda: (
            committed_offsets(cluster.plain, group, topic, 3)
            == end_offsets(cluster.plain, topic, 3)
        ),
        30,
        "committed to the end",
    )
    bodies = {path: worker.get(path)[1] for path in HTTP_PATHS}
    assert worker.get("/readyz")[0] == 200
    assert worker.stop() == 0

    secret = cluster.passwords["worker"]
    _assert_secret_absent(
        secret,
        {
            **{f"GET {path}": body for path, body in bodies.items()},
            "worker output": worker.log_path.read_text(errors="replace"),
            "server.properties": (cluster.data_dir / "server.properties").read_text(),
            "broker.json": (cluster.data_dir / "broker.json").read_text(),
        },
    )


@pytest.mark.integration
def test_password_from_a_mounted_kubernetes_secret(cluster: Cluster, tmp_path: Path) -> None:
    """A Secret volume as the kubelet lays it out: <mount>/<key> -> ..data/<key>, ..data -> a
    timestamped dir; the file ends with a line break (as `echo` leaves it)."""
    mount = tmp_path / "kafka-credentials"
    real = mount / "..2026_11_27_12_00_00.000000001"
    real.mkdir(parents=True)
    (real / "sasl-password").write_text(cluster.passwords["worker-file"] + "\n")
    (mount / "..data").symlink_to(real.name)
    (mount / "sasl-password").symlink_to("..data/sasl-password")

    topic, dlq, group = _topics(cluster, "secret-file")
    _grant(cluster, "worker-file", {"topic": topic, "group": group, "dlq": dlq})
    events = list(synthetic_events(40, seed=11))
    _produce(cluster, topic, events, invalid=0)

    worker = _worker(
        cluster,
        tmp_path,
        topic,
        group,
        "worker-file",
        env={"USAGE_CONSUMER_SASL_PASSWORD_FILE": str(mount / "sasl-password")},
    ).start()
    worker.wait_for(
        lambda: usage_series(worker.scrape()) == expected_series(events), 60, "counting"
    )
    bodies = {path: worker.get(path)[1] for path in HTTP_PATHS}
    assert worker.stop() == 0
    _assert_secret_absent(
        cluster.passwords["worker-file"],
        {
            **{f"GET {path}": body for path, body in bodies.items()},
            "worker output": worker.log_path.read_text(errors="replace"),
        },
    )


# ---------------------------------------------------------------------------------------------
# Refusals: each stops the worker with one line naming the problem


@pytest.mark.integration
def test_wrong_password_stops_the_worker(cluster: Cluster, tmp_path: Path) -> None:
    topic, _dlq, group = _topics(cluster, "wrong-password")
    wrong = _password()
    refusal = _refused(
        _worker(
            cluster,
            tmp_path,
            topic,
            group,
            "worker",
            env={"USAGE_CONSUMER_SASL_PASSWORD": wrong},
        )
    )
    assert refusal.returncode == 2
    assert refusal.message.startswith(
        "usage-consumer: authentication failed for user 'worker' with SASL SCRAM-SHA-512: check "
        "sasl_username and the password (sasl_password or sasl_password_file) ["
    ), refusal.message
    assert "invalid credentials" in refusal.message
    _assert_secret_absent(wrong, {"worker output": refusal.log})
    _assert_secret_absent(cluster.passwords["worker"], {"worker output": refusal.log})


@pytest.mark.integration
def test_untrusted_broker_certificate_stops_the_worker(cluster: Cluster, tmp_path: Path) -> None:
    topic, _dlq, group = _topics(cluster, "untrusted")
    refusal = _refused(_worker(cluster, tmp_path, topic, group, "worker", ca_file=cluster.other_ca))
    assert refusal.returncode == 2
    assert refusal.message.startswith(
        f"usage-consumer: the broker's certificate is not trusted by CA file {cluster.other_ca} "
        "(ssl_ca_location): use the CA that signed the broker's certificate ["
    ), refusal.message
    assert "certificate verify failed" in refusal.message
    _assert_secret_absent(cluster.passwords["worker"], {"worker output": refusal.log})


@pytest.mark.integration
def test_missing_ca_file_is_refused_at_start_up(cluster: Cluster, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "ca.pem"
    refusal = _refused(_worker(cluster, tmp_path, "llm-usage", "g", "worker", ca_file=missing))
    assert refusal.returncode == 2
    assert refusal.message == (
        "usage-consumer: invalid setting ssl_ca_location (env USAGE_CONSUMER_SSL_CA_LOCATION, "
        f"flag --ssl-ca-location): Value error, CA file {missing} does not exist "
        f"(got '{missing}')"
    )
    _assert_secret_absent(cluster.passwords["worker"], {"worker output": refusal.log})


# Each case: the user, the ACLs left out, and how the refusal must begin ({topic}, {group},
# {dlq} filled in). READ implies DESCRIBE, so without READ alone the worker joins the group,
# gets its partitions, and is refused at the first fetch; without either it cannot see the topic.
ACL_CASES = [
    pytest.param(
        "no-topic-read",
        frozenset({("topic", AclOperation.READ)}),
        "TOPIC_AUTHORIZATION_FAILED on topic {topic}: User:no-topic-read needs READ and "
        "DESCRIBE on topic {topic} [Fetch from broker 1 failed: Broker: Topic authorization "
        "failed]",
        id="topic-READ",
    ),
    pytest.param(
        "no-topic-access",
        frozenset({("topic", AclOperation.READ), ("topic", AclOperation.DESCRIBE)}),
        "TOPIC_AUTHORIZATION_FAILED on topic {topic}: User:no-topic-access needs READ and "
        "DESCRIBE on topic {topic} [Broker: Topic authorization failed]",
        id="topic-READ-and-DESCRIBE",  # found by the topic check before joining
    ),
    pytest.param(
        "no-group-read",
        frozenset({("group", AclOperation.READ)}),
        "GROUP_AUTHORIZATION_FAILED on group {group}: User:no-group-read needs READ on group "
        "{group} [FindCoordinator response error: Group authorization failed.]",
        id="group-READ",
    ),
    pytest.param(
        "no-dlq-write",
        frozenset({("dlq", AclOperation.WRITE), ("dlq", AclOperation.DESCRIBE)}),
        "DLQ write denied: TOPIC_AUTHORIZATION_FAILED on topic {dlq}: User:no-dlq-write needs "
        "WRITE and DESCRIBE on topic {dlq} [Broker: Topic authorization failed]",
        id="dlq-WRITE",  # found by the topic check before joining
    ),
]


@pytest.mark.integration
@pytest.mark.parametrize(("user", "omit", "expected"), ACL_CASES)
def test_each_missing_acl_stops_the_worker_naming_it(
    cluster: Cluster,
    tmp_path: Path,
    user: str,
    omit: frozenset[tuple[str, Any]],
    expected: str,
) -> None:
    topic, dlq, group = _topics(cluster, f"acl-{user}")
    _grant(cluster, user, {"topic": topic, "group": group, "dlq": dlq}, omit)
    _produce(cluster, topic, list(synthetic_events(5, seed=3)), invalid=1)
    refusal = _refused(_worker(cluster, tmp_path, topic, group, user))
    assert refusal.returncode == 2, refusal.log
    want = "usage-consumer: " + expected.format(topic=topic, group=group, dlq=dlq)
    assert refusal.message.startswith(want), refusal.message
    assert refusal.seconds < REFUSAL_DEADLINE_S
    _assert_secret_absent(cluster.passwords[user], {"worker output": refusal.log})


@pytest.mark.integration
def test_dead_letter_producer_without_write_is_classified_as_dlq_write_denied(
    cluster: Cluster,
) -> None:
    """The worker's own dead-letter producer config, for a user that may READ its topic and
    group but WRITE nothing: the broker refuses the idempotent producer id, librdkafka raises
    a fatal error, and `access_error` names the ACL to add."""
    topic, dlq, group = _topics(cluster, "dlq-probe")
    _grant(
        cluster,
        "dlq-probe",
        {"topic": topic, "group": group, "dlq": dlq},
        frozenset({("dlq", AclOperation.WRITE), ("dlq", AclOperation.DESCRIBE)}),
    )
    settings = load_settings(
        {
            "bootstrap_servers": cluster.secure,
            "topic": topic,
            "group_id": group,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": MECHANISM,
            "sasl_username": "dlq-probe",
            "sasl_password": cluster.passwords["dlq-probe"],
            "ssl_ca_location": str(cluster.ca_file),
        }
    )
    config = settings.producer_config()
    producer = Producer(config)
    deadline = time.monotonic() + REFUSAL_DEADLINE_S
    with pytest.raises(KafkaException) as raised:  # noqa: PT012 - poll until it fails
        while time.monotonic() < deadline:
            producer.poll(0.2)
    err = raised.value.args[0]
    assert err.fatal()
    who = ClientIdentity.of(config, topic, dlq_topic=settings.dead_letter_topic)
    refusal = access_error(err, who)
    assert refusal is not None
    assert str(refusal).startswith(
        "DLQ write denied: CLUSTER_AUTHORIZATION_FAILED for the dead-letter producer's id: "
        f"User:dlq-probe needs WRITE and DESCRIBE on topic {dlq} ["
    ), str(refusal)


# ---------------------------------------------------------------------------------------------
# Settings: the password in no dump, no error; the files checked up front


@pytest.fixture
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("USAGE_CONSUMER_"):
            monkeypatch.delenv(name)


SECURE = {"security_protocol": "SASL_SSL", "sasl_mechanism": MECHANISM, "sasl_username": "svc"}


@pytest.mark.usefixtures("_clean_env")
def test_settings_dumps_never_show_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = _password()
    password_file = tmp_path / "password"
    password_file.write_text(secret + "\r\n")
    from_file = load_settings({**SECURE, "sasl_password_file": str(password_file)})
    monkeypatch.setenv("USAGE_CONSUMER_SASL_PASSWORD", secret)
    from_env = load_settings(SECURE)
    monkeypatch.delenv("USAGE_CONSUMER_SASL_PASSWORD")

    for settings in (from_file, from_env):
        # Only the librdkafka configs hold it, for librdkafka.
        assert settings.consumer_config()["sasl.password"] == secret
        assert settings.producer_config()["sasl.password"] == secret
        assert settings.sasl_secret().get_secret_value() == secret
        _assert_secret_absent(
            secret,
            {
                "repr": repr(settings),
                "str": str(settings),
                "model_dump_json": settings.model_dump_json(),
                "model_dump": str(settings.model_dump()),
                "redacted": json.dumps(settings.redacted()),
                "secret repr": repr(settings.sasl_secret()),
            },
        )
    # Refusals that involve the password name the settings, never the value.
    monkeypatch.setenv("USAGE_CONSUMER_SASL_PASSWORD", secret)
    with pytest.raises(ConfigError) as both:
        load_settings({**SECURE, "sasl_password_file": str(password_file)})
    assert "sasl_password and sasl_password_file are both set" in str(both.value)
    with pytest.raises(ConfigError) as typed:
        load_settings({**SECURE, "kafka_options": {"sasl.password": secret}})
    _assert_secret_absent(secret, {"both": str(both.value), "kafka_options": str(typed.value)})
    monkeypatch.delenv("USAGE_CONSUMER_SASL_PASSWORD")
    # A password of the wrong type is refused without being echoed (other settings echo theirs).
    with pytest.raises(ConfigError) as bad_type:
        load_settings({**SECURE, "sasl_password": 1234567})
    assert "invalid setting sasl_password" in str(bad_type.value)
    assert "1234567" not in str(bad_type.value)


@pytest.mark.usefixtures("_clean_env")
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {**SECURE, "sasl_password_file": "{tmp}/absent"},
            "invalid setting sasl_password_file (env USAGE_CONSUMER_SASL_PASSWORD_FILE, flag "
            "--sasl-password-file): Value error, password file {tmp}/absent does not exist",
        ),
        (
            {**SECURE, "sasl_password_file": "{tmp}/empty"},
            "Value error, password file {tmp}/empty is empty",
        ),
        (
            {**SECURE, "sasl_password_file": "{tmp}"},
            "Value error, password file {tmp} is a directory, not a file",
        ),
        (SECURE, "a password is required with SCRAM-SHA-512: set sasl_password_file or "),
        (
            {**SECURE, "sasl_username": "", "sasl_password": "x"},
            "sasl_username is required with SCRAM-SHA-512",
        ),
        (
            {"sasl_mechanism": MECHANISM},
            "sasl_mechanism SCRAM-SHA-512 has no effect with security_protocol PLAINTEXT",
        ),
        (
            {"ssl_ca_location": "{tmp}/ca.pem"},
            "ssl_ca_location is set but security_protocol PLAINTEXT does not use TLS",
        ),
        (
            {"security_protocol": "SSL", "ssl_ca_location": "{tmp}/empty"},
            "Value error, CA file {tmp}/empty holds no PEM certificate",
        ),
    ],
)
def test_security_settings_are_checked_at_start_up(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    (tmp_path / "empty").write_text("\n")
    write_pki(tmp_path)
    filled = {key: value.replace("{tmp}", str(tmp_path)) for key, value in overrides.items()}
    with pytest.raises(ConfigError) as refused:
        load_settings(filled)
    assert message.replace("{tmp}", str(tmp_path)) in str(refused.value)


@pytest.mark.usefixtures("_clean_env")
def test_plaintext_stays_the_default() -> None:
    config = load_settings().consumer_config()
    assert config["security.protocol"] == "PLAINTEXT"
    assert not any(key.startswith(("sasl.", "ssl.")) for key in config)
