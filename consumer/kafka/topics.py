"""Topic administration: create the topic and its dead-letter topic, describe them, check them.

`usage-consumer topics create` (`create_command`) creates what is missing and reports what
exists; `usage-consumer topics describe` (`describe_command`) prints both topics' partitions,
replication and the configs that matter. `check_topics` is what the worker runs before it joins
its group, and `check_produce_topic` what `usage-consumer produce` runs before its first message:
a missing topic, a topic the principal may not see, or a broker that does not answer stops them
within 10 s with one line saying what to do, where librdkafka would otherwise wait (30 s of
message timeouts, or a group with no partitions for ever).

Defaults, for a single local broker: the topic gets 12 partitions (up to 12 workers share it;
partitions can be added later but never removed, and adding them moves keys), replication
factor 1. The dead-letter topic gets 1 partition by default: only invalid events go there, its
order does not matter, and one log is the easiest to read; a cluster where a broken producer
can flood it gives it more with `--dlq-partitions`. A production cluster wants
`--replication-factor 3`.

Every function takes an `AdminClient` or an admin config (`Settings.admin_config()`). From a
config it builds a quiet client: librdkafka's own log lines (dozens a second against a closed
port) are dropped, and its errors are kept to tell a refused login from an absent broker.
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from consumer.errors import AccessError, AuthorizationError, ConfigError, UsageConsumerError
from consumer.kafka.refusals import ClientIdentity, access_error
from consumer.logs import KAFKA_LOGGER
from consumer.settings import Settings, setting_label

__all__ = [
    "CHECK_TIMEOUT_S",
    "DEFAULT_DLQ_PARTITIONS",
    "DEFAULT_PARTITIONS",
    "DEFAULT_REPLICATION",
    "DESCRIBED_CONFIGS",
    "BrokerUnreachableError",
    "MissingTopicError",
    "TopicDescription",
    "TopicOutcome",
    "TopicsError",
    "check_produce_topic",
    "check_topics",
    "create_command",
    "create_topics",
    "describe_command",
    "describe_topics",
    "ensure_topics",
    "format_table",
]

DEFAULT_PARTITIONS = 12
DEFAULT_DLQ_PARTITIONS = 1
DEFAULT_REPLICATION = 1
#: The whole check, client included, ends within this many seconds.
CHECK_TIMEOUT_S = 10.0
#: The topic configs `describe_topics` shows.
DESCRIBED_CONFIGS = ("retention.ms", "cleanup.policy", "max.message.bytes", "min.insync.replicas")

_CREATE_TIMEOUT_S = 30.0
# Metadata is asked for in slices this long, so a refused login reported between them stops the
# check at once instead of at the deadline.
_SLICE_S = 1.0
# Kept back from the budget for the client's set-up and the second topic's answer.
_MARGIN_S = 0.5
_MISSING = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC})
_BOOTSTRAP_SETTING = setting_label("bootstrap_servers")


class TopicsError(UsageConsumerError):
    """A topic a command needs is missing, or the cluster could not be asked about it."""


class MissingTopicError(TopicsError):
    """The topic (or the dead-letter topic) does not exist; the message says how to create it."""

    def __init__(self, message: str, missing: Sequence[str]) -> None:
        self.missing = tuple(missing)
        super().__init__(message)


class BrokerUnreachableError(TopicsError):
    """No broker of the bootstrap list answered within the time allowed."""


# ---------------------------------------------------------------------------------------------
# The client and the metadata look-up


#: Makes the AccessError an error stands for (of the topic named, if any), or None.
_Refuse = Callable[[KafkaError, str | None], AccessError | None]


def _refuser(who: ClientIdentity) -> _Refuse:
    return lambda err, topic: access_error(err, who, topic)


class _Client:
    """An AdminClient, what it was told to reach, and the errors librdkafka reported."""

    def __init__(self, admin: AdminClient | Mapping[str, Any], bootstrap_servers: str) -> None:
        self.errors: list[KafkaError] = []
        if isinstance(admin, AdminClient):
            self.admin = admin
            self.config: Mapping[str, Any] = {}
            self.bootstrap = bootstrap_servers or "the configured bootstrap servers"
            return
        self.config = admin
        self.bootstrap = bootstrap_servers or str(admin.get("bootstrap.servers", ""))
        config = {
            **admin,
            "log_level": 0,  # librdkafka's log lines; its errors come to error_cb
            "error_cb": self.errors.append,
            # An admin client is a producer to librdkafka, which would let a metadata request
            # create the topic on a broker with auto.create.topics.enable=true.
            "allow.auto.create.topics": False,
        }
        self.admin = AdminClient(config)

    def lookup(
        self, names: Sequence[str], deadline: float, refuse: _Refuse, unreachable: str
    ) -> dict[str, Any]:
        """name -> its TopicMetadata (error None, or UNKNOWN_TOPIC_OR_PART when missing).

        Raises the AccessError `refuse` makes of a refused login, TLS handshake or topic ACL,
        and BrokerUnreachableError (`unreachable`) when no broker answered by `deadline`."""
        found: dict[str, Any] = {}
        for name in names:
            while name not in found:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BrokerUnreachableError(unreachable)
                try:
                    metadata = self.admin.list_topics(name, timeout=min(_SLICE_S, remaining))
                except KafkaException as exc:
                    self._raise_refusal(refuse, exc.args[0] if exc.args else None)
                    continue  # timed out or no broker yet: ask again until the deadline
                topic = metadata.topics.get(name)
                if topic is None:  # not in the answer at all: as good as unknown
                    found[name] = _Unknown()
                    continue
                if topic.error is not None:
                    refusal = refuse(topic.error, name)
                    if refusal is not None:
                        raise refusal
                found[name] = topic
        return found

    def _raise_refusal(self, refuse: _Refuse, err: Any) -> None:
        self.admin.poll(0)  # serves error_cb
        for reported in [*self.errors, err]:
            if isinstance(reported, KafkaError):
                refusal = refuse(reported, None)
                if refusal is not None:
                    raise refusal


class _Unknown:
    error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
    partitions: dict[int, Any] = {}  # noqa: RUF012 - never written


def _exists(metadata: Any) -> bool:
    return metadata.error is None or metadata.error.code() not in _MISSING


def _replication(metadata: Any) -> int:
    partitions = metadata.partitions
    return len(partitions[min(partitions)].replicas) if partitions else 0


def _unreachable(bootstrap: str, timeout_s: float, setting: str) -> str:
    who = (
        f"none of the brokers at {bootstrap}" if "," in bootstrap else f"the broker at {bootstrap}"
    )
    return (
        f"{who} could not be reached within {timeout_s:g} s: check {setting} and that the "
        "broker is running"
    )


def _create_command(bootstrap: str, topic: str, dlq_topic: str | None) -> str:
    args = ["usage-consumer", "topics", "create", "--bootstrap-servers", bootstrap]
    args += ["--topic", topic]
    if dlq_topic is not None and dlq_topic != f"{topic}.dlq":
        args += ["--dlq-topic", dlq_topic]
    return shlex.join(args)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# ---------------------------------------------------------------------------------------------
# Checks


def check_topics(
    admin: AdminClient | Mapping[str, Any],
    topic: str,
    dlq_topic: str,
    timeout_s: float = CHECK_TIMEOUT_S,
    *,
    bootstrap_servers: str = "",
    bootstrap_setting: str = _BOOTSTRAP_SETTING,
) -> dict[str, int]:
    """The worker's check before it joins its group: both topics exist and it may see them.

    Returns each topic's partition count. Raises, with one line, MissingTopicError (naming the
    `usage-consumer topics create` command that fixes it), AuthorizationError (the ACL to add),
    AuthenticationError/TlsError, or BrokerUnreachableError; all within `timeout_s`.
    `bootstrap_servers` is needed only with an AdminClient (a config names its own)."""
    started = time.monotonic()
    client = _Client(admin, bootstrap_servers)
    who = ClientIdentity.of(client.config, topic, dlq_topic)
    found = client.lookup(
        [topic, dlq_topic],
        started + timeout_s - _MARGIN_S,
        _refuser(who),
        _unreachable(client.bootstrap, timeout_s, bootstrap_setting),
    )
    missing = [name for name in (topic, dlq_topic) if not _exists(found[name])]
    if missing:
        command = _create_command(client.bootstrap, topic, dlq_topic)
        where = f"on the cluster at {client.bootstrap}"
        if len(missing) == 2:
            what = f"topics {topic} and {dlq_topic} (dead letters) do not exist {where}"
            raise MissingTopicError(f"{what}; create them with: {command}", missing)
        label = "topic" if missing[0] == topic else "dead-letter topic"
        raise MissingTopicError(
            f"{label} {missing[0]} does not exist {where}; create it with: {command}", missing
        )
    return {name: len(found[name].partitions) for name in (topic, dlq_topic)}


def check_produce_topic(
    config: AdminClient | Mapping[str, Any],
    topic: str,
    timeout_s: float = CHECK_TIMEOUT_S,
    *,
    bootstrap_servers: str = "",
    bootstrap_setting: str = "--bootstrap-servers",
) -> int:
    """A producer's check before its first message: the topic exists and it may see it.

    Returns its partition count; raises as `check_topics` does, with WRITE as the ACL to add."""
    started = time.monotonic()
    client = _Client(config, bootstrap_servers)
    who = ClientIdentity.of(client.config, topic)

    def refuse(err: KafkaError, name: str | None) -> AccessError | None:
        if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            principal = f"User:{who.username}" if who.username else "the producer's principal"
            return AuthorizationError(
                f"TOPIC_AUTHORIZATION_FAILED on topic {topic}: {principal} needs WRITE and "
                f"DESCRIBE on topic {topic} [{err.str()}]"
            )
        return access_error(err, who, name)

    unreachable = _unreachable(client.bootstrap, timeout_s, bootstrap_setting)
    found = client.lookup([topic], started + timeout_s - _MARGIN_S, refuse, unreachable)
    if not _exists(found[topic]):
        command = _create_command(client.bootstrap, topic, None)
        raise MissingTopicError(
            f"topic {topic} does not exist on the cluster at {client.bootstrap}; create it "
            f"with: {command}",
            [topic],
        )
    return len(found[topic].partitions)


# ---------------------------------------------------------------------------------------------
# Creating


@dataclass(frozen=True)
class TopicOutcome:
    """What `create_topics` did about one topic."""

    topic: str
    role: str  # "topic" or "dead-letter topic"
    created: bool
    partitions: int  # as the topic has them now
    replication: int
    asked_partitions: int
    asked_replication: int

    @property
    def line(self) -> str:
        shape = f"{_plural(self.partitions, 'partition')}, replication factor {self.replication}"
        if self.created:
            return f"created {self.role} {self.topic}: {shape}"
        return f"{self.role} {self.topic} exists: {shape}"

    @property
    def warning(self) -> str | None:
        """One line when an existing topic differs from what was asked; it is left as it is."""
        if self.created:
            return None
        differences = []
        if self.partitions != self.asked_partitions:
            differences.append(
                f"{_plural(self.partitions, 'partition')}, not {self.asked_partitions}"
            )
        if self.replication != self.asked_replication:
            differences.append(
                f"replication factor {self.replication}, not {self.asked_replication}"
            )
        if not differences:
            return None
        return (
            f"warning: {self.role} {self.topic} has {' and '.join(differences)} as asked; "
            "left unchanged"
        )


def create_topics(
    admin: AdminClient | Mapping[str, Any],
    topic: str,
    dlq_topic: str | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    replication: int = DEFAULT_REPLICATION,
    *,
    dlq_partitions: int = DEFAULT_DLQ_PARTITIONS,
    bootstrap_servers: str = "",
    bootstrap_setting: str = _BOOTSTRAP_SETTING,
    timeout_s: float = _CREATE_TIMEOUT_S,
    out: TextIO | None = None,
) -> list[TopicOutcome]:
    """Create the topic and its dead-letter topic (`<topic>.dlq` unless named) where missing.

    Idempotent: an existing topic is reported as it is, with a warning when its partitions or
    replication differ from what was asked (nothing is changed). Returns one outcome per topic,
    the topic first; with `out`, prints each outcome's line and warning there."""
    dlq = dlq_topic or f"{topic}.dlq"
    for value, flag in (
        (partitions, "--partitions"),
        (dlq_partitions, "--dlq-partitions"),
        (replication, "--replication-factor"),
    ):
        if value < 1:
            raise ConfigError(flag, f"must be at least 1, got {value}")
    started = time.monotonic()
    client = _Client(admin, bootstrap_servers)
    who = ClientIdentity.of(client.config, topic, dlq)
    unreachable = _unreachable(client.bootstrap, CHECK_TIMEOUT_S, bootstrap_setting)
    asked = {topic: (partitions, replication), dlq: (dlq_partitions, replication)}
    roles = {topic: "topic", dlq: "dead-letter topic"}
    try:
        deadline = started + CHECK_TIMEOUT_S - _MARGIN_S
        found = client.lookup([topic, dlq], deadline, _refuser(who), unreachable)
    except AuthorizationError:
        # Without DESCRIBE a topic looks unauthorized whether it exists or not; creating it
        # tells which (and needs CREATE, which may be granted).
        found = {topic: _Unknown(), dlq: _Unknown()}
    missing = [name for name in (topic, dlq) if not _exists(found[name])]
    created: set[str] = set()
    if missing:
        requests = [NewTopic(name, *asked[name]) for name in missing]
        for name, future in client.admin.create_topics(requests).items():
            try:
                future.result(timeout=timeout_s)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:  # created meanwhile
                    raise _create_error(name, err, who, replication) from None
            else:
                created.add(name)
        again = [name for name in missing if name not in created]
        if again:
            found.update(_wait_visible(client, again, time.monotonic() + timeout_s, who))
    outcomes = []
    for name in (topic, dlq):
        if name in created:
            count, factor = asked[name]
        else:
            count, factor = len(found[name].partitions), _replication(found[name])
        outcomes.append(
            TopicOutcome(name, roles[name], name in created, count, factor, *asked[name])
        )
    if out is not None:
        for outcome in outcomes:
            out.write(outcome.line + "\n")
            if outcome.warning:
                out.write(outcome.warning + "\n")
    return outcomes


def _wait_visible(
    client: _Client, names: Sequence[str], deadline: float, who: ClientIdentity
) -> dict[str, Any]:
    """Metadata of topics that exist but may not be in the broker's metadata cache yet."""
    while True:
        found = client.lookup(names, deadline, _refuser(who), "the topics were not visible in time")
        if all(_exists(found[n]) and found[n].partitions for n in names):
            return found
        if time.monotonic() > deadline:
            raise TopicsError(f"topics {', '.join(names)} exist but have no metadata yet")
        time.sleep(0.1)


def _create_error(
    name: str, err: KafkaError, who: ClientIdentity, replication: int
) -> UsageConsumerError:
    detail = err.str()
    code = err.code()
    if code in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
        principal = f"User:{who.username}" if who.username else "this principal"
        return AuthorizationError(
            f"{err.name()} creating topic {name}: {principal} needs CREATE on topic {name} "
            f"(or on the cluster) [{detail}]"
        )
    if code == KafkaError.INVALID_REPLICATION_FACTOR:
        return ConfigError(
            "--replication-factor", f"topic {name} cannot get {replication} replicas [{detail}]"
        )
    return TopicsError(f"could not create topic {name}: {err.name()} [{detail}]")


def ensure_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    """Create missing topics (replication 1: for the local broker only)."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": logging.getLogger(KAFKA_LOGGER),
    }
    admin = AdminClient(config)
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [NewTopic(t, partitions, 1) for t in topics if t not in existing]
    for future in admin.create_topics(missing).values() if missing else []:
        future.result(timeout=30)


# ---------------------------------------------------------------------------------------------
# Describing


@dataclass(frozen=True)
class TopicDescription:
    """One topic as the cluster has it; `configs` holds DESCRIBED_CONFIGS ("?" if unreadable)."""

    topic: str
    role: str  # "topic" or "dlq"
    exists: bool
    partitions: int = 0
    replication: int = 0
    configs: Mapping[str, str] | None = None


def describe_topics(
    admin: AdminClient | Mapping[str, Any],
    topic: str,
    dlq_topic: str | None = None,
    timeout_s: float = CHECK_TIMEOUT_S,
    *,
    bootstrap_servers: str = "",
    bootstrap_setting: str = _BOOTSTRAP_SETTING,
) -> list[TopicDescription]:
    """The topic and its dead-letter topic: existence, partitions, replication, configs."""
    dlq = dlq_topic or f"{topic}.dlq"
    started = time.monotonic()
    deadline = started + timeout_s - _MARGIN_S
    client = _Client(admin, bootstrap_servers)
    who = ClientIdentity.of(client.config, topic, dlq)
    found = client.lookup(
        [topic, dlq],
        deadline,
        _refuser(who),
        _unreachable(client.bootstrap, timeout_s, bootstrap_setting),
    )
    existing = [name for name in (topic, dlq) if _exists(found[name])]
    configs: dict[str, dict[str, str]] = {}
    if existing:
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in existing]
        for resource, future in client.admin.describe_configs(resources).items():
            try:
                entries = future.result(timeout=max(deadline - time.monotonic(), 0.1))
            except (KafkaException, TimeoutError):
                entries = {}
            configs[resource.name] = {
                key: str(entries[key].value) if key in entries else "?" for key in DESCRIBED_CONFIGS
            }
    return [
        TopicDescription(
            name,
            role,
            name in configs,
            len(found[name].partitions),
            _replication(found[name]),
            configs.get(name),
        )
        for name, role in ((topic, "topic"), (dlq, "dlq"))
    ]


def format_table(descriptions: Sequence[TopicDescription]) -> str:
    """A small aligned table, one row per topic, ending in a line break."""
    header = ["role", "topic", "exists", "partitions", "replication", *DESCRIBED_CONFIGS]
    rows = [header]
    for d in descriptions:
        if d.exists:
            values = [str(d.partitions), str(d.replication)]
            values += [(d.configs or {}).get(key, "?") for key in DESCRIBED_CONFIGS]
        else:
            values = ["-"] * (2 + len(DESCRIBED_CONFIGS))
        rows.append([d.role, d.topic, "yes" if d.exists else "no", *values])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )


# ---------------------------------------------------------------------------------------------
# The CLI's commands


def create_command(
    settings: Settings,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    dlq_partitions: int = DEFAULT_DLQ_PARTITIONS,
    replication_factor: int = DEFAULT_REPLICATION,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """`usage-consumer topics create`: lines to `out`, warnings to `err`; 0 (raises on errors)."""
    out = out or sys.stdout
    err = err or sys.stderr
    outcomes = create_topics(
        settings.admin_config(),
        settings.topic,
        settings.dead_letter_topic,
        partitions,
        replication_factor,
        dlq_partitions=dlq_partitions,
    )
    for outcome in outcomes:
        out.write(outcome.line + "\n")
        if outcome.warning:
            err.write(outcome.warning + "\n")
    return 0


def describe_command(settings: Settings, *, out: TextIO | None = None) -> int:
    """`usage-consumer topics describe`: the table to `out`; 0, or 1 if a topic is missing
    (then a last line names the command that creates it)."""
    out = out or sys.stdout
    descriptions = describe_topics(
        settings.admin_config(), settings.topic, settings.dead_letter_topic
    )
    out.write(format_table(descriptions))
    if all(d.exists for d in descriptions):
        return 0
    command = _create_command(
        settings.bootstrap_servers, settings.topic, settings.dead_letter_topic
    )
    out.write(f"create the missing topics with: {command}\n")
    return 1
