"""The protected endpoint: a web configuration file (Prometheus exporter format) turns on HTTPS
and basic auth. A throwaway CA signs the server's certificate; a real MetricsServer serves a
real registry; real HTTPS clients (http.client with an SSLContext) talk to it."""

from __future__ import annotations

import base64
import gzip
import http.client
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry

from consumer.errors import ConfigError
from consumer.exposition.self_metrics import WorkerMetrics
from consumer.pipeline.commit import ScrapeAcknowledger
from consumer.pipeline.health import HealthState
from consumer.pipeline.ledger import OffsetLedger
from consumer.web.server import MetricsServer
from consumer.web.webconfig import BasicAuth, load_web_config
from tests import certs
from tests.harness import parse_exposition

PASSWORD = "s3cret pass: wörd"  # noqa: S105 - a space, a colon and non-ASCII: all legal in basic auth
KEY = ("llm-usage", 0)


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Issued
    other_ca: Path  # trusted by nobody here
    client_ca: Path
    client: Issued  # signed by client_ca
    stranger: Issued  # a client certificate from other_ca


def _ca(directory: Path, cn: str) -> tuple[Path, certs.Authority]:
    ca = certs.authority(cn)
    path = directory / f"{cn}.crt"
    path.write_bytes(ca.pem())
    return path, ca


def _issue(directory: Path, cn: str, issuer: certs.Authority, *, server: bool) -> Issued:
    key, cert = certs.issue(issuer, cn, server=server)
    cert_path, key_path = directory / f"{cn}.crt", directory / f"{cn}.key"
    cert_path.write_bytes(certs.cert_pem(cert))
    key_path.write_bytes(certs.key_pem(key))
    return Issued(cert_path, key_path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_path, ca = _ca(d, "test-ca")
    other_path, other = _ca(d, "other-ca")
    client_ca_path, client_ca = _ca(d, "client-ca")
    return Pki(
        ca=ca_path,
        server=_issue(d, "server", ca, server=True),
        other_ca=other_path,
        client_ca=client_ca_path,
        client=_issue(d, "prometheus", client_ca, server=False),
        stranger=_issue(d, "stranger", other, server=False),
    )


@pytest.fixture(scope="module")
def password_hash() -> str:
    # Cost 4 keeps the tests fast; htpasswd writes $2y$, which the file format allows.
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$")


def _write_config(directory: Path, text: str) -> Path:
    path = directory / "web-config.yml"
    path.write_text(text)
    return path


def _config_text(pki: Pki, password_hash: str, extra_tls: str = "") -> str:
    # Relative paths: the toolkit resolves them against the file's directory.
    cert = os.path.relpath(pki.server.cert, pki.ca.parent)
    return (
        "tls_server_config:\n"
        f"  cert_file: {cert}\n"
        f"  key_file: {pki.server.key}\n"
        f"{extra_tls}"
        "http_server_config:\n"
        "  http2: true\n"
        "  headers:\n"
        "    Strict-Transport-Security: max-age=31536000\n"
        "basic_auth_users:\n"
        f"  prometheus: {password_hash}\n"
        f"  other: {bcrypt.hashpw(b'other-password', bcrypt.gensalt(4)).decode()}\n"
    )


@dataclass
class Served:
    server: MetricsServer
    port: int
    ledger: OffsetLedger
    metrics: WorkerMetrics


@pytest.fixture
def served(pki: Pki, password_hash: str) -> Iterator[Served]:
    yield from _serve(_write_config(pki.ca.parent, _config_text(pki, password_hash)))


def _serve(config: Path) -> Iterator[Served]:
    registry = CollectorRegistry(auto_describe=True)
    metrics = WorkerMetrics.create(registry)
    metrics.consumed.inc(42)
    ledger = OffsetLedger("scrape")
    ledger.assign([KEY])
    ledger.advance(KEY, 10, recorded=10, last_recorded=9)
    server = MetricsServer(
        "127.0.0.1",
        0,
        registry,
        HealthState(),
        ScrapeAcknowledger(ledger, metrics),
        web=load_web_config(str(config)),
    )
    server.start()
    try:
        yield Served(server, server.address[1], ledger, metrics)
    finally:
        server.stop()


def _trusting(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=pki.ca)


def _get(
    port: int,
    path: str,
    context: ssl.SSLContext,
    auth: tuple[str, str] | None = None,
    extra: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        headers = dict(extra or {})
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_correct_credentials_get_the_exposition_and_the_scrape_covers(
    served: Served, pki: Pki
) -> None:
    assert served.server.scheme == "https"
    assert served.ledger.states()[KEY].covered == -1
    status, headers, body = _get(served.port, "/metrics", _trusting(pki), ("prometheus", PASSWORD))
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    series = parse_exposition(body.decode())
    assert series[("usage_consumer_messages_consumed_total", frozenset())] == 42.0
    # A completed scrape over TLS is a scrape: the observer's after_response ran.
    state = served.ledger.states()[KEY]
    assert (state.covered, state.committable, state.unscraped_events) == (10, 10, 0)
    assert served.ledger.pending()[0].offset == 10
    status, _, body = _get(served.port, "/metrics", _trusting(pki), ("prometheus", PASSWORD))
    assert status == 200
    assert parse_exposition(body.decode())[("usage_consumer_scrapes_total", frozenset())] == 1.0


def test_a_gzip_scrape_over_tls_with_basic_auth_covers_as_a_plain_one(
    served: Served, pki: Pki
) -> None:
    gzip_encoding = {"Accept-Encoding": "gzip"}
    status, headers, body = _get(
        served.port, "/metrics", _trusting(pki), ("prometheus", PASSWORD), gzip_encoding
    )
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    series = parse_exposition(gzip.decompress(body).decode())
    assert series[("usage_consumer_messages_consumed_total", frozenset())] == 42.0
    state = served.ledger.states()[KEY]
    assert (state.covered, state.committable, state.unscraped_events) == (10, 10, 0)
    # Without credentials: a 401 that is not compressed, and nothing more is covered.
    status, headers, _ = _get(served.port, "/metrics", _trusting(pki), None, gzip_encoding)
    assert status == 401
    assert "Content-Encoding" not in headers


@pytest.mark.parametrize(
    "auth",
    [
        None,
        ("prometheus", "wrong"),
        ("prometheus", PASSWORD + " "),
        ("nobody", PASSWORD),
        ("other", PASSWORD),  # another user's password is not this one's
    ],
    ids=["no-credentials", "wrong-password", "password-plus-space", "unknown-user", "other-user"],
)
def test_bad_credentials_get_401_and_cover_nothing(
    served: Served, pki: Pki, auth: tuple[str, str] | None
) -> None:
    for path in ("/metrics", "/", "/status", "/nonexistent"):
        status, headers, body = _get(served.port, path, _trusting(pki), auth)
        assert (status, body) == (401, b"401 unauthorized\n"), path
        assert headers["WWW-Authenticate"] == 'Basic realm="usage-consumer", charset="UTF-8"'
    assert served.ledger.states()[KEY].covered == -1
    assert served.ledger.pending() == []


def test_malformed_authorization_headers_get_401(served: Served, pki: Pki) -> None:
    for header in ("Basic", "Basic !!!notbase64", "Bearer abc", "Basic " + "bm9jb2xvbg=="):
        conn = http.client.HTTPSConnection("127.0.0.1", served.port, context=_trusting(pki))
        conn.request("GET", "/metrics", headers={"Authorization": header})
        response = conn.getresponse()
        assert response.status == 401, header
        response.read()
        conn.close()


def test_probes_need_no_credentials_but_still_tls(served: Served, pki: Pki) -> None:
    status, _, body = _get(served.port, "/healthz", _trusting(pki))
    assert (status, body) == (200, b"ok\n")
    status, _, body = _get(served.port, "/readyz", _trusting(pki))
    assert (status, body) == (503, b"no partitions assigned\n")


def test_plain_http_to_the_tls_port_fails(served: Served) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    assert response.status == 400
    assert response.read() == b"Client sent an HTTP request to an HTTPS server.\n"
    conn.close()
    assert served.ledger.states()[KEY].covered == -1


def test_a_client_that_does_not_trust_the_ca_fails_the_handshake(served: Served, pki: Pki) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _get(served.port, "/healthz", ssl.create_default_context())  # system CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        _get(served.port, "/healthz", ssl.create_default_context(cafile=pki.other_ca))
    # The server survives failed handshakes.
    assert _get(served.port, "/healthz", _trusting(pki))[0] == 200


def test_a_stalled_client_does_not_block_others(served: Served, pki: Pki) -> None:
    with socket.create_connection(("127.0.0.1", served.port)):  # connects, says nothing
        started = time.monotonic()
        assert _get(served.port, "/healthz", _trusting(pki))[0] == 200
        assert time.monotonic() - started < 2


def test_client_certificates_when_required(pki: Pki, password_hash: str, tmp_path: Path) -> None:
    extra = (
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {pki.client_ca}\n"
        "  min_version: TLS13\n"
    )
    config = tmp_path / "mtls.yml"
    config.write_text(
        _config_text(pki, password_hash, extra).replace(
            os.path.relpath(pki.server.cert, pki.ca.parent), str(pki.server.cert)
        )
    )
    for served in _serve(config):
        with_cert = _trusting(pki)
        with_cert.load_cert_chain(pki.client.cert, pki.client.key)
        status, _, _ = _get(served.port, "/metrics", with_cert, ("prometheus", PASSWORD))
        assert status == 200
        assert served.ledger.states()[KEY].covered == 10
        stranger = _trusting(pki)
        stranger.load_cert_chain(pki.stranger.cert, pki.stranger.key)
        for context in (_trusting(pki), stranger):
            # TLS 1.3: the server checks the client certificate after the client's handshake
            # finished, so the refusal arrives on the first read.
            with pytest.raises((ssl.SSLError, ConnectionError)):
                _get(served.port, "/healthz", context)
        old = _trusting(pki)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        old.load_cert_chain(pki.client.cert, pki.client.key)
        with pytest.raises(ssl.SSLError):
            _get(served.port, "/healthz", old)


def test_a_rotated_certificate_is_served_on_new_connections(
    pki: Pki, password_hash: str, tmp_path: Path
) -> None:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    cert.write_bytes(pki.server.cert.read_bytes())
    key.write_bytes(pki.server.key.read_bytes())
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")

    def served_cert(port: int) -> bytes:
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            _trusting(pki).wrap_socket(raw, server_hostname="127.0.0.1") as conn,
        ):
            der = conn.getpeercert(binary_form=True)
            assert der is not None
            return der

    for served in _serve(config):
        first = served_cert(served.port)
        assert first == ssl.PEM_cert_to_DER_cert(pki.server.cert.read_text())
        d = tmp_path / "new"
        d.mkdir()
        ca_cert = x509.load_pem_x509_certificate(pki.ca.read_bytes())
        # The CA key is not kept by the fixture: sign the new server cert with a new CA and
        # trust that one too.
        new_ca_path, new_ca = _ca(d, "rotated-ca")
        assert ca_cert.subject != new_ca.cert.subject
        fresh = _issue(d, "server2", new_ca, server=True)
        key.write_bytes(fresh.key.read_bytes())
        cert.write_bytes(fresh.cert.read_bytes())
        # A scrape over a connection opened now gets the new certificate.
        context = ssl.create_default_context(cafile=new_ca_path)
        status, _, _ = _get(served.port, "/healthz", context)
        assert status == 200
        # No users in this file: no basic auth.
        assert _get(served.port, "/metrics", context)[0] == 200
        # A rotation that leaves the files broken keeps the last good certificate.
        cert.write_text("not a certificate")
        assert _get(served.port, "/healthz", context)[0] == 200


# --- start-up validation ------------------------------------------------------------------


def _bad_configs(pki: Pki, password_hash: str) -> list[tuple[str, str, str]]:
    good_tls = f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}\n"
    return [
        ("yaml", "tls_server_config: [unclosed\n", "not valid YAML"),
        ("top-level-list", "- a\n- b\n", "expected a mapping, got list"),
        ("unknown-key", "tls_server_confg: {}\n", "tls_server_confg: unknown key"),
        ("unknown-tls-key", good_tls + "  cert_fil: x\n", "tls_server_config.cert_fil: unknown"),
        (
            "inline-cert",
            "tls_server_config:\n  cert: abc\n",
            "tls_server_config.cert: inline certificates are not supported",
        ),
        ("rate-limit", "rate_limit:\n  burst: 1\n", "rate_limit: not supported"),
        (
            "missing-key-file",
            f"tls_server_config:\n  cert_file: {pki.server.cert}\n",
            "tls_server_config.key_file: missing",
        ),
        (
            "no-such-cert",
            f"tls_server_config:\n  cert_file: nope.crt\n  key_file: {pki.server.key}\n",
            "tls_server_config: cannot load the TLS files: [Errno 2] No such file",
        ),
        (
            "cert-key-mismatch",
            f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.client.key}\n",
            "tls_server_config: cannot load the TLS files: [X509: KEY_VALUES_MISMATCH]",
        ),
        (
            "ca-without-auth-type",
            good_tls + f"  client_ca_file: {pki.client_ca}\n",
            "tls_server_config.client_ca_file: set without a client_auth_type",
        ),
        (
            "auth-type-without-ca",
            good_tls + "  client_auth_type: RequireAndVerifyClientCert\n",
            "tls_server_config.client_auth_type: RequireAndVerifyClientCert needs a client_ca",
        ),
        (
            "unsupported-auth-type",
            good_tls + "  client_auth_type: RequireAnyClientCert\n",
            "tls_server_config.client_auth_type: 'RequireAnyClientCert' is not supported",
        ),
        (
            "bad-version",
            good_tls + "  min_version: TLS14\n",
            "tls_server_config.min_version: 'TLS14' is not one of TLS10, TLS11, TLS12, TLS13",
        ),
        (
            "min-above-max",
            good_tls + "  min_version: TLS13\n  max_version: TLS12\n",
            "tls_server_config.min_version: is above max_version",
        ),
        (
            "plain-password",
            "basic_auth_users:\n  prometheus: hunter2\n",
            "basic_auth_users.prometheus: not a bcrypt hash",
        ),
        (
            "unknown-header",
            "http_server_config:\n  headers:\n    X-Custom: 1\n",
            "http_server_config.headers.X-Custom: unknown key",
        ),
    ]


def test_malformed_config_files_stop_start_up_naming_the_setting(
    pki: Pki, password_hash: str, tmp_path: Path
) -> None:
    for name, text, problem in _bad_configs(pki, password_hash):
        path = tmp_path / f"{name}.yml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_web_config(str(path))
        message = str(info.value)
        assert message.startswith(
            "invalid setting web_config_file (env USAGE_CONSUMER_WEB_CONFIG_FILE, flag "
            f"--web-config-file): {path}: "
        ), name
        assert problem in message, (name, message)
        assert "hunter2" not in message
    with pytest.raises(ConfigError, match="cannot read it: No such file"):
        load_web_config(str(tmp_path / "absent.yml"))


def test_the_worker_refuses_to_start_with_a_bad_file(tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text("basic_auth_users:\n  prometheus: plain-text\n")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "run", "--web-config-file", str(config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("USAGE_CONSUMER_")},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "usage-consumer: invalid setting web_config_file (env USAGE_CONSUMER_WEB_CONFIG_FILE, "
        f"flag --web-config-file): {config}: basic_auth_users.prometheus: not a bcrypt hash "
        "($2a$, $2b$ or $2y$)"
    )
    assert "plain-text" not in result.stderr
    assert time.monotonic() - started < 30  # it never tried to reach a broker


# --- the credential cache -----------------------------------------------------------------


def test_verified_credentials_are_cached_briefly(password_hash: str) -> None:
    auth = BasicAuth({"prometheus": password_hash.encode()}, ttl_s=0.3)
    assert auth.verify("prometheus", PASSWORD)
    assert auth.verify("prometheus", PASSWORD)
    assert auth.bcrypt_checks == 1  # the second came from the cache
    assert not auth.verify("prometheus", "wrong")
    assert not auth.verify("prometheus", "wrong")
    assert auth.bcrypt_checks == 2  # a wrong password is cached as wrong
    assert not auth.verify("nobody", PASSWORD)  # checked against the decoy hash
    assert auth.bcrypt_checks == 3
    time.sleep(0.35)
    assert auth.verify("prometheus", PASSWORD)
    assert auth.bcrypt_checks == 4  # expired: checked again


def test_the_credential_cache_is_bounded(password_hash: str) -> None:
    auth = BasicAuth({"prometheus": password_hash.encode()}, max_cached=3)
    for n in range(10):
        assert not auth.verify("prometheus", f"guess-{n}")
    assert len(auth._cache) == 3
    assert auth.bcrypt_checks == 10
