"""Run a real single-node Apache Kafka broker on this machine, without Docker.

The broker comes from Maven Central (see kafka/pom.xml beside this module, shipped as package
data): `ensure_jars` copies its jars into a cache once, `start_broker` formats a data dir and
starts one combined broker+controller process on 127.0.0.1, `stop_broker` stops it. The process
is detached, so it outlives the Python process that started it; everything needed to find it
again lives in the data dir:

    <data_dir>/server.properties   written on every start
    <data_dir>/broker.json         pid, ports, cluster id (kept after a stop, for a restart)
    <data_dir>/broker.log          the JVM's stdout/stderr (ERROR and above, crashes)
    <data_dir>/logs/server.log     WARN and above (kafka/log4j2.properties beside this module)
    <data_dir>/kraft/              the topic data and the metadata log

A data dir is formatted once. Starting it again reuses its cluster id, ports and data, so a
stopped broker comes back with the same bootstrap address and the same messages.

Secured clusters: `start_broker(..., secure=SecureListener(...))` adds a SASL_SSL listener on a
third port next to the PLAINTEXT one. Clients authenticate with SCRAM (users created when the
data dir is formatted, `kafka-storage format --add-scram`) over TLS with the broker certificate
of a PEM keystore (`ssl.keystore.type=PEM`); with `authorizer=True` the StandardAuthorizer
checks ACLs on every listener. The PLAINTEXT and CONTROLLER listeners stay as they are, bound to
127.0.0.1: they carry the controller and inter-broker traffic and serve as the admin door, so
their principal, User:ANONYMOUS, is a super user. That keeps start-up, the readiness probe and
every existing caller unchanged; it suits a test broker on loopback, not a shared one.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from consumer.errors import BrokerError

__all__ = [
    "KAFKA_VERSION",
    "BrokerInfo",
    "SecureListener",
    "broker_status",
    "default_jar_cache",
    "ensure_jars",
    "start_broker",
    "stop_broker",
]

# Keep in step with <kafka.version> in consumer/devtools/kafka/pom.xml.
KAFKA_VERSION = "4.4.0"

# Package data (pyproject.toml), so an installed wheel finds them as a checkout does.
_KAFKA_PROJECT = Path(__file__).resolve().parent / "kafka"
_POM = _KAFKA_PROJECT / "pom.xml"
_LOG4J_CONFIG = _KAFKA_PROJECT / "log4j2.properties"

_JARS_ENV = "USAGE_CONSUMER_KAFKA_JARS"
# Written last into a jar cache; holds a hash of the pom, so an interrupted download or an edited
# pom is never taken for a complete cache.
_MARKER = ".complete"
_MVN_TIMEOUT = 1800.0

_STATE_FILE = "broker.json"
_PROPERTIES_FILE = "server.properties"
_CONSOLE_LOG = "broker.log"
_LOGS_DIR = "logs"
_KRAFT_DIR = "kraft"
_LOG_TAIL_LINES = 30

_HEAP_OPTS = ["-Xms256m", "-Xmx512m"]
# The stock start script's G1 settings, minus GC logs and JMX.
_JVM_OPTS = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
    # Log4j's own shutdown hook races Kafka's at JVM exit (a warning on stderr, the last lines
    # lost); the file appender flushes every line, so nothing needs the hook.
    "-Dlog4j2.shutdownHookEnabled=false",
]

# Settings for one combined node; the listener settings are added per start.
_SINGLE_NODE_PROPERTIES: dict[str, str] = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "inter.broker.listener.name": "PLAINTEXT",
    # Internal topics default to replication factor 3, which one node cannot satisfy.
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "share.coordinator.state.topic.num.partitions": "1",
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    # Topics are created on purpose, by the code or the tests, never by a typo.
    "auto.create.topics.enable": "false",
    "group.initial.rebalance.delay.ms": "0",
    # The default 128 MiB dedupe buffer does not fit a 512 MiB heap next to everything else.
    "log.cleaner.dedupe.buffer.size": "2097152",
    # KIP-848 groups: the session timeout is set broker-side (min 45 s by default). Lowered so a
    # fault test sees a dead member leave within seconds.
    "group.consumer.min.session.timeout.ms": "6000",
    "group.consumer.session.timeout.ms": "10000",
    "group.consumer.min.heartbeat.interval.ms": "500",
    "group.consumer.heartbeat.interval.ms": "1000",
    # Classic groups: let clients ask for short session timeouts too.
    "group.min.session.timeout.ms": "1000",
}


@dataclass(frozen=True)
class BrokerInfo:
    """Where a running local broker listens, and its process."""

    bootstrap: str
    port: int
    controller_port: int
    pid: int
    data_dir: Path
    # The SASL_SSL listener's address, when the broker was started with one.
    secure_bootstrap: str | None = None


_SECURE_LISTENER = "SASL_SSL"
# Characters that would break the `--add-scram 'MECH=[name=...,password=...]'` syntax.
_SCRAM_FORBIDDEN = frozenset(',[]="\\ \t\r\n')


@dataclass(frozen=True)
class SecureListener:
    """A SASL_SSL listener added next to the PLAINTEXT one.

    `keystore` is a PEM file holding the broker's private key (PKCS#8, unencrypted) followed by
    its certificate chain; its certificate must name 127.0.0.1 (clients check the host name).
    `scram_users` (name -> password) are created with `mechanism` when the data dir is
    formatted, and only then: a formatted data dir keeps the users it was formatted with.
    `authorizer` turns on the StandardAuthorizer: only `super_users` (plus User:ANONYMOUS, the
    PLAINTEXT listener's principal) may do anything without an ACL. `port` None picks a free
    one. The passwords are never written to server.properties or broker.json, and never shown
    in a repr.
    """

    keystore: Path
    scram_users: Mapping[str, str] = field(default_factory=dict, repr=False)
    mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    authorizer: bool = False
    super_users: tuple[str, ...] = ()
    port: int | None = None

    def properties(self) -> dict[str, str]:
        """server.properties entries of this listener, besides `listeners` and the maps."""
        name = _SECURE_LISTENER.lower()
        mech = self.mechanism.lower()
        props = {
            f"listener.name.{name}.sasl.enabled.mechanisms": self.mechanism,
            # The broker side of SCRAM needs a login module, but no credentials of its own:
            # inter-broker traffic stays on PLAINTEXT.
            f"listener.name.{name}.{mech}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            f"listener.name.{name}.ssl.keystore.type": "PEM",
            f"listener.name.{name}.ssl.keystore.location": str(self.keystore.resolve()),
        }
        if self.authorizer:
            props["authorizer.class.name"] = (
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
            )
            props["super.users"] = ";".join(
                ["User:ANONYMOUS", *(f"User:{user}" for user in self.super_users)]
            )
            props["allow.everyone.if.no.acl.found"] = "false"
        return props

    def scram_arguments(self) -> list[str]:
        """`kafka-storage format` arguments creating the SCRAM users."""
        args: list[str] = []
        for user, password in self.scram_users.items():
            for what, value in (("user name", user), ("password", password)):
                if not value or _SCRAM_FORBIDDEN.intersection(value):
                    raise BrokerError(
                        f'SCRAM {what} of {user!r} is empty or holds one of , [ ] = " \\ '
                        "or whitespace"
                    )
            args += ["--add-scram", f"{self.mechanism}=[name={user},password={password}]"]
        return args

    def to_state(self, port: int) -> dict[str, Any]:
        """What broker.json keeps (no passwords: the users live in the formatted metadata)."""
        return {
            "port": port,
            "keystore": str(self.keystore.resolve()),
            "mechanism": self.mechanism,
            "authorizer": self.authorizer,
            "super_users": list(self.super_users),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SecureListener:
        mechanism = state.get("mechanism")
        if mechanism not in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            raise BrokerError(f"broker.json names an unknown SCRAM mechanism {mechanism!r}")
        return cls(
            keystore=Path(str(state["keystore"])),
            mechanism=mechanism,
            authorizer=bool(state.get("authorizer")),
            super_users=tuple(str(user) for user in state.get("super_users", ())),
            port=int(state["port"]),
        )


# ---------------------------------------------------------------------------------------------
# Jars


def default_jar_cache() -> Path:
    """Where the broker jars are cached: $USAGE_CONSUMER_KAFKA_JARS, else a per-version folder."""
    override = os.environ.get(_JARS_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "llm-usage-consumer" / f"kafka-{KAFKA_VERSION}"


def ensure_jars(cache_dir: Path | None = None) -> Path:
    """Return a folder holding the broker's jars, downloading them with Maven if needed."""
    cache = (cache_dir or default_jar_cache()).resolve()
    if not _POM.is_file():
        raise BrokerError(f"the broker's pom is missing: {_POM}")
    want = _pom_digest()
    if _marker_matches(cache, want):
        return cache

    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("mvn (Apache Maven) is not on PATH; it is needed to fetch the Kafka jars")
    cache.parent.mkdir(parents=True, exist_ok=True)
    with _locked(cache.parent / f".{cache.name}.lock"):
        # Another process may have finished the download while this one waited for the lock.
        if _marker_matches(cache, want):
            return cache
        # Download next to the cache and rename it into place, so that a download cut short
        # leaves only a temp dir behind, never a cache that looks usable.
        tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
        try:
            cmd = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(_POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={tmp}",
            ]
            try:
                done = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=_MVN_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise BrokerError(
                    f"mvn did not fetch the Kafka jars in {_MVN_TIMEOUT:.0f} s"
                ) from exc
            if done.returncode != 0:
                output = _last_lines(done.stdout + done.stderr, _LOG_TAIL_LINES)
                raise BrokerError(
                    f"mvn failed to fetch the Kafka jars (exit {done.returncode}):\n{output}"
                )
            if not (tmp / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
                raise BrokerError(
                    f"mvn finished but kafka_2.13-{KAFKA_VERSION}.jar is not in {tmp}; "
                    "is KAFKA_VERSION in step with consumer/devtools/kafka/pom.xml?"
                )
            (tmp / _MARKER).write_text(want + "\n", encoding="utf-8")
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
            if cache.exists():
                shutil.rmtree(cache)  # incomplete, or made from another pom
            tmp.rename(cache)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return cache


def _pom_digest() -> str:
    return hashlib.sha256(_POM.read_bytes()).hexdigest()


def _marker_matches(cache: Path, digest: str) -> bool:
    try:
        return (cache / _MARKER).read_text(encoding="utf-8").strip() == digest
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Broker


def start_broker(
    data_dir: Path,
    port: int | None = None,
    *,
    timeout: float = 120.0,
    extra_properties: Mapping[str, str] | None = None,
    jars: Path | None = None,
    secure: SecureListener | None = None,
) -> BrokerInfo:
    """Start a single-node broker on 127.0.0.1 for `data_dir` and wait until it answers.

    A new data dir is formatted with a fresh cluster id and free ports (`port` if given). A
    data dir formatted before keeps its cluster id, its ports (unless `port` is given) and, when
    `extra_properties` is None, the extra properties it was last started with. If the broker of
    this data dir is already running, its info is returned as it is.

    `extra_properties` are written over the defaults in server.properties (for example another
    listener). In their values, "{port}" and "{controller_port}" stand for the ports in use, so
    a `listeners` override can keep the two standard listeners. The returned bootstrap address
    is the PLAINTEXT listener's.

    `secure` adds a SASL_SSL listener (see SecureListener); its address is the returned
    `secure_bootstrap`. Like the extra properties, a data dir keeps the secure listener it was
    last started with when `secure` is None. Its SCRAM users are created only when the data dir
    is formatted.

    Raises BrokerError, with the end of the broker's log, if the broker exits or is not ready
    within `timeout` seconds; in the latter case it is stopped first.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir / ".lock"):
        running = broker_status(data_dir)
        if running is not None:
            return running

        java = _find_java()
        jar_dir = (jars or ensure_jars()).resolve()
        kraft_dir = data_dir / _KRAFT_DIR
        logs_dir = data_dir / _LOGS_DIR
        logs_dir.mkdir(exist_ok=True)
        state = _read_state(data_dir)
        cluster_id = _stored_cluster_id(kraft_dir)
        formatted = cluster_id is not None

        # The same ports after a restart keep the bootstrap address clients hold valid.
        stored_port = state.get("port") if formatted else None
        stored_controller = state.get("controller_port") if formatted else None
        if isinstance(stored_port, int) and isinstance(stored_controller, int):
            broker_port = port if port is not None else stored_port
            controller_port = stored_controller
            given = [broker_port, controller_port]
        else:
            broker_port, controller_port = _free_ports(port)
            given = [port] if port is not None else []
        if broker_port == controller_port:
            raise BrokerError(f"port {broker_port} is the broker's controller port")
        # Ports not picked just now may have been taken meanwhile; say so before Kafka fails.
        busy = [p for p in given if not _port_is_free(p)]
        if busy:
            raise BrokerError(f"port {busy[0]} for the broker in {data_dir} is already in use")

        if extra_properties is None:
            stored_extra = state.get("extra_properties")
            extra = dict(stored_extra) if isinstance(stored_extra, dict) else {}
        else:
            extra = dict(extra_properties)

        stored_secure = state.get("secure") if formatted else None
        if secure is None and isinstance(stored_secure, dict):
            secure = SecureListener.from_state(stored_secure)
        secure_port: int | None = None
        if secure is not None:
            if not secure.keystore.is_file():
                raise BrokerError(f"the broker keystore {secure.keystore} does not exist")
            secure_port = secure.port or _free_port_except({broker_port, controller_port})
            if secure_port in (broker_port, controller_port):
                raise BrokerError(f"port {secure_port} is already one of the broker's ports")
            if secure.port is not None and not _port_is_free(secure_port):
                raise BrokerError(f"port {secure_port} for the SASL_SSL listener is already in use")

        listeners = f"PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}"
        advertised = f"PLAINTEXT://127.0.0.1:{broker_port}"
        props = dict(_SINGLE_NODE_PROPERTIES)
        if secure is not None:
            secure_url = f"{_SECURE_LISTENER}://127.0.0.1:{secure_port}"
            listeners += f",{secure_url}"
            advertised += f",{secure_url}"
            props["listener.security.protocol.map"] += f",{_SECURE_LISTENER}:{_SECURE_LISTENER}"
            props.update(secure.properties())
        props.update(
            {
                "listeners": listeners,
                "advertised.listeners": advertised,
                # A static voter, as the official image does; a single node needs no dynamic quorum.
                "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
                "log.dirs": str(kraft_dir),
            }
        )
        # Plain replace, not str.format: other braces in values (JAAS, config providers) stay.
        for key, value in extra.items():
            props[key] = value.replace("{port}", str(broker_port)).replace(
                "{controller_port}", str(controller_port)
            )
        props_file = data_dir / _PROPERTIES_FILE
        _write_properties(props_file, props)

        classpath = str(jar_dir / "*")  # Java expands the wildcard itself
        log_opts = [f"-Dlog4j2.configurationFile={_LOG4J_CONFIG}", f"-Dkafka.logs.dir={logs_dir}"]
        if cluster_id is None:
            cluster_id = _new_cluster_id()
            scram = secure.scram_arguments() if secure is not None else []
            _format_storage(java, classpath, log_opts, cluster_id, props_file, extra_args=scram)

        bootstrap = f"127.0.0.1:{broker_port}"
        _rotate(data_dir / _CONSOLE_LOG)
        _rotate(logs_dir / "server.log")
        pid = _spawn_detached(
            [
                java,
                *_HEAP_OPTS,
                *_JVM_OPTS,
                *log_opts,
                "-cp",
                classpath,
                "kafka.Kafka",
                str(props_file),
            ],
            data_dir / _CONSOLE_LOG,
        )
        _write_state(
            data_dir,
            {
                "pid": pid,
                "port": broker_port,
                "controller_port": controller_port,
                "bootstrap": bootstrap,
                "cluster_id": cluster_id,
                "kafka_version": KAFKA_VERSION,
                "extra_properties": extra,
                "secure": (
                    secure.to_state(secure_port)
                    if secure is not None and secure_port is not None
                    else None
                ),
            },
        )
        info = BrokerInfo(
            bootstrap=bootstrap,
            port=broker_port,
            controller_port=controller_port,
            pid=pid,
            data_dir=data_dir,
            secure_bootstrap=None if secure_port is None else f"127.0.0.1:{secure_port}",
        )
        _wait_ready(info, timeout)
        return info


def stop_broker(data_dir: Path, timeout: float = 30.0) -> bool:
    """Stop the broker of `data_dir`: SIGTERM, then SIGKILL after `timeout` seconds.

    Returns True if one was running. The data, ports and cluster id stay for a later start.
    """
    data_dir = data_dir.resolve()
    if not data_dir.is_dir():
        return False
    with _locked(data_dir / ".lock"):
        info = broker_status(data_dir)
        if info is None:
            return False
        _terminate(info.pid, data_dir, timeout)
        state = _read_state(data_dir)
        state["pid"] = None  # so a recycled pid is never taken for this broker
        _write_state(data_dir, state)
        return True


def broker_status(data_dir: Path) -> BrokerInfo | None:
    """The running broker of `data_dir`, from its state file; None if none is running."""
    data_dir = data_dir.resolve()
    state = _read_state(data_dir)
    pid, port, controller_port = state.get("pid"), state.get("port"), state.get("controller_port")
    if not (isinstance(pid, int) and isinstance(port, int) and isinstance(controller_port, int)):
        return None
    if not _is_our_broker(pid, data_dir):
        return None
    secure = state.get("secure")
    secure_port = secure.get("port") if isinstance(secure, dict) else None
    return BrokerInfo(
        bootstrap=f"127.0.0.1:{port}",
        port=port,
        controller_port=controller_port,
        pid=pid,
        data_dir=data_dir,
        secure_bootstrap=f"127.0.0.1:{secure_port}" if isinstance(secure_port, int) else None,
    )


# ---------------------------------------------------------------------------------------------
# Helpers


def _find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise BrokerError(
            "java is not on PATH (nor in $JAVA_HOME/bin); Kafka 4 needs Java 17 or newer"
        )
    return found


def _new_cluster_id() -> str:
    # Kafka's form: a UUID as 22 characters of URL-safe base64. One starting with '-' would read
    # as an option on the command line, so draw again, as Kafka's own generator does.
    while True:
        raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not raw.startswith("-"):
            return raw


def _stored_cluster_id(kraft_dir: Path) -> str | None:
    """The cluster id a formatted log dir holds (meta.properties), None if not formatted."""
    meta = kraft_dir / "meta.properties"
    try:
        text = meta.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "cluster.id":
            return value.strip()
    raise BrokerError(f"{meta} has no cluster.id; delete {kraft_dir.parent} to start afresh")


def _format_storage(
    java: str,
    classpath: str,
    log_opts: list[str],
    cluster_id: str,
    props_file: Path,
    *,
    extra_args: list[str],
) -> None:
    cmd = [
        java,
        "-Xmx256m",
        "-XX:TieredStopAtLevel=1",  # a short run: the quick JIT alone starts it sooner
        *log_opts,
        "-cp",
        classpath,
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(props_file),
        *extra_args,
    ]
    try:
        done = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError("formatting the broker's storage took over 120 s") from exc
    if done.returncode != 0:
        output = _last_lines(done.stdout + done.stderr, _LOG_TAIL_LINES)
        # The command line holds the SCRAM passwords; the tool's output could quote them.
        for arg in extra_args:
            if arg.startswith("SCRAM-"):
                output = output.replace(arg, "SCRAM-...=[redacted]")
        raise BrokerError(
            f"formatting the broker's storage failed (exit {done.returncode}):\n{output}"
        )


def _spawn_detached(cmd: list[str], console_log: Path) -> int:
    """Start `cmd` in its own session, orphaned, with its output in `console_log`; return its pid.

    A small sh starts the command in the background and exits at once, so the broker is adopted
    by init: it outlives this process, and no Popen object is left to warn that its child still
    runs or to leave a zombie behind.
    """
    launcher = subprocess.run(
        # $0 is the log file, "$@" the command.
        ["/bin/sh", "-c", '"$@" </dev/null >>"$0" 2>&1 & echo $!', str(console_log), *cmd],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        start_new_session=True,
    )
    try:
        return int(launcher.stdout.strip())
    except ValueError as exc:
        raise BrokerError(
            f"could not start the broker: {launcher.stderr.strip() or 'no pid reported'}"
        ) from exc


def _wait_ready(info: BrokerInfo, timeout: float) -> None:
    """Poll the broker with an admin client until it serves metadata, or fail."""
    # Imported here so that the rest of this module works without confluent_kafka loaded.
    from confluent_kafka import KafkaException  # noqa: PLC0415
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    config: dict[str, Any] = {
        "bootstrap.servers": info.bootstrap,
        # Refused connections are expected until the broker listens: keep librdkafka quiet and
        # retrying often.
        "log_level": 0,
        "error_cb": _ignore_error,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 500,
        "socket.connection.setup.timeout.ms": 1000,
    }
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout
    while True:
        if not _is_our_broker(info.pid, info.data_dir):
            raise BrokerError(
                f"the Kafka broker in {info.data_dir} exited during start-up\n"
                + _log_tail(info.data_dir)
            )
        try:
            metadata = admin.list_topics(timeout=0.5)
        except KafkaException:
            metadata = None
        if metadata is not None and metadata.brokers:
            return
        if time.monotonic() >= deadline:
            tail = _log_tail(info.data_dir)
            _terminate(info.pid, info.data_dir, 10.0)
            raise BrokerError(
                f"the Kafka broker in {info.data_dir} was not ready within {timeout:.0f} s "
                f"(stopped it)\n{tail}"
            )
        time.sleep(0.1)


def _ignore_error(_error: Any) -> None:
    return None


def _terminate(pid: int, data_dir: Path, timeout: float) -> None:
    """SIGTERM (Kafka shuts down cleanly), then SIGKILL once `timeout` has passed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, data_dir, timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, data_dir, 10.0):
        raise BrokerError(f"the Kafka broker (pid {pid}) in {data_dir} survived SIGKILL")


def _wait_gone(pid: int, data_dir: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _is_our_broker(pid, data_dir):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    """True if `pid` is alive and is the broker of `data_dir` (pids get recycled)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        # No /proc (not Linux): settle for "some process has this pid".
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # A zombie has an empty command line: it is gone as far as Kafka is concerned.
    args = cmdline.split(b"\0")
    return b"kafka.Kafka" in args and str(data_dir / _PROPERTIES_FILE).encode() in args


def _free_ports(port: int | None) -> tuple[int, int]:
    """(broker port, controller port): free on 127.0.0.1 now, and different from each other."""
    with contextlib.ExitStack() as stack:
        taken: list[int] = []
        for wanted in (port, None):
            if wanted is not None:
                taken.append(wanted)
                continue
            # Keep each socket bound until both are picked, so the two ports differ.
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            taken.append(int(sock.getsockname()[1]))
        broker_port, controller_port = taken
    return broker_port, controller_port


def _free_port_except(taken: set[int]) -> int:
    """A port free on 127.0.0.1 now, not among `taken`."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As a server socket would: a port whose old connections sit in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _write_properties(path: Path, props: Mapping[str, str]) -> None:
    lines = ["# Written by consumer/broker.py on each start; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in props.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _read_state(data_dir: Path) -> dict[str, Any]:
    try:
        loaded = json.loads((data_dir / _STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _write_state(data_dir: Path, state: Mapping[str, Any]) -> None:
    # Write then rename, so a reader never sees half a file.
    tmp = data_dir / f".{_STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(data_dir / _STATE_FILE)


def _rotate(log: Path) -> None:
    """Keep the previous run's log as <name>.1, so a failure's tail shows only this run."""
    if log.exists():
        log.replace(log.with_name(log.name + ".1"))


def _log_tail(data_dir: Path) -> str:
    parts = []
    for log in (data_dir / _CONSOLE_LOG, data_dir / _LOGS_DIR / "server.log"):
        try:
            text = log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if text.strip():
            parts.append(f"--- last lines of {log} ---\n{_last_lines(text, _LOG_TAIL_LINES)}")
    return "\n".join(parts) or f"(the broker wrote no log in {data_dir})"


def _last_lines(text: str, count: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-count:])


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the duration of the block."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
