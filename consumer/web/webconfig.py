"""TLS and basic auth for the HTTP server, configured like a Prometheus exporter.

The `web_config_file` setting names a file in the format of the Prometheus exporter toolkit's
web configuration (docs/web-configuration.md of prometheus/exporter-toolkit), so the file an
operator already writes for node_exporter works here unchanged:

    tls_server_config:
      cert_file: server.crt            # relative paths are relative to this file's directory
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
      client_ca_file: clients-ca.crt
      min_version: TLS12               # default TLS12; max_version default TLS13
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}
    basic_auth_users:
      prometheus: $2y$10$...           # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\\n')

Everything is read and checked once, at start-up: a bad file stops the worker with a
`ConfigError` naming the setting, the file and the key. Options this worker cannot honour
(inline `cert`/`key`, cipher and curve lists, `client_allowed_sans`, `rate_limit`, client auth
types Python's ssl module cannot express) are refused rather than ignored: a silently dropped
security option is worse than a worker that will not start. Certificates are the exception to
"read once": the server calls `TLSContexts.current()` per connection, which reloads the
certificate, key and client CA when their files change (cert-manager rotates them in place).
The users are not reloaded; changing them takes a restart.

Which paths need credentials is decided in consumer.web.server (`/healthz` and `/readyz` do not).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from consumer.errors import ConfigError

__all__ = [
    "SETTING",
    "BasicAuth",
    "TLSContexts",
    "TLSSettings",
    "WebConfig",
    "load_web_config",
]

log = logging.getLogger(__name__)

SETTING = "web_config_file (env USAGE_CONSUMER_WEB_CONFIG_FILE, flag --web-config-file)"

_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH = {
    "": ssl.CERT_NONE,
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# The toolkit's keys this worker knows but cannot honour, and why.
_UNSUPPORTED = {
    "cert": "inline certificates are not supported: use cert_file",
    "key": "inline keys are not supported: use key_file",
    "client_ca": "inline client CAs are not supported: use client_ca_file",
    "cipher_suites": "not supported: Python's ssl module uses OpenSSL's defaults",
    "curve_preferences": "not supported: Python's ssl module uses OpenSSL's defaults",
    "client_allowed_sans": "not supported: restrict clients with client_ca_file instead",
    "rate_limit": "not supported",
}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
}
_HTTP_KEYS = {"http2", "headers"}
# The response headers the toolkit lets a file set.
_HEADERS = {
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
}
_BCRYPT = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")


def _problem(path: Path, where: str, problem: str) -> ConfigError:
    return ConfigError(SETTING, f"{path}: {where}: {problem}" if where else f"{path}: {problem}")


@dataclass(frozen=True)
class TLSSettings:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    verify_mode: ssl.VerifyMode = ssl.CERT_NONE
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3

    def files(self) -> list[Path]:
        return [p for p in (self.cert_file, self.key_file, self.client_ca_file) if p]

    def build(self) -> ssl.SSLContext:
        """A server context; raises OSError or ssl.SSLError when a file is missing or bad."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = self.min_version
        context.maximum_version = self.max_version
        context.load_cert_chain(self.cert_file, self.key_file, password=_no_password)
        if self.client_ca_file is not None:
            context.load_verify_locations(cafile=self.client_ca_file)
        context.verify_mode = self.verify_mode
        return context


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise ValueError("the key file is encrypted: use an unencrypted key (a Kubernetes secret)")


class TLSContexts:
    """The server's SSLContext, rebuilt when the certificate, key or CA files change.

    Asked once per connection (a stat of two or three files); a rebuild that fails keeps the
    previous context and logs why, so a half-written rotation never takes the endpoint down.
    """

    def __init__(self, tls: TLSSettings) -> None:
        self._tls = tls
        self._lock = threading.Lock()
        self._stamp = self._files_stamp()
        self._context = tls.build()
        self._failed_stamp: object = None

    def _files_stamp(self) -> tuple[tuple[int, int], ...]:
        stats = [os.stat(p) for p in self._tls.files()]
        return tuple((s.st_mtime_ns, s.st_size) for s in stats)

    def current(self) -> ssl.SSLContext:
        try:
            stamp = self._files_stamp()
        except OSError:
            return self._context  # mid-rotation (a file briefly missing): keep serving
        with self._lock:
            if stamp not in (self._stamp, self._failed_stamp):
                try:
                    self._context = self._tls.build()
                except (OSError, ssl.SSLError, ValueError) as exc:
                    self._failed_stamp = stamp
                    log.error(
                        "TLS files changed but could not be loaded (%s): keeping the old", exc
                    )
                else:
                    self._stamp = stamp
                    log.info("TLS certificate reloaded from %s", self._tls.cert_file)
            return self._context


@dataclass(frozen=True)
class WebConfig:
    path: Path
    tls: TLSSettings | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    headers: Mapping[str, str] = field(default_factory=dict)  # added to every response


def load_web_config(path_text: str) -> WebConfig:
    """Read and check the file; ConfigError (naming the setting, file and key) when it is bad.

    The TLS files are loaded once here too, so a certificate that does not match its key stops
    start-up instead of failing every scrape."""
    path = Path(path_text)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _problem(path, "", f"cannot read it: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _problem(path, "", f"not valid YAML: {exc}") from None
    if data is None:
        data = {}
    _mapping(path, "", data, {"tls_server_config", "http_server_config", "basic_auth_users"})
    tls = _tls(path, data.get("tls_server_config"))
    headers = _headers(path, data.get("http_server_config"))
    users = _users(path, data.get("basic_auth_users"))
    if tls is not None:
        try:
            TLSContexts(tls)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise _problem(path, "tls_server_config", f"cannot load the TLS files: {exc}") from None
    return WebConfig(path=path, tls=tls, users=users, headers=headers)


def _mapping(path: Path, where: str, value: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _problem(path, where, f"expected a mapping, got {type(value).__name__}")
    for key in value:
        if key in _UNSUPPORTED:
            raise _problem(path, f"{where}.{key}".lstrip("."), _UNSUPPORTED[key])
        if key not in allowed:
            raise _problem(
                path,
                f"{where}.{key}".lstrip("."),
                f"unknown key (known: {', '.join(sorted(allowed))})",
            )
    return value


def _string(path: Path, where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _problem(path, where, f"expected a string, got {type(value).__name__}")
    return value


def _tls(path: Path, section: Any) -> TLSSettings | None:
    if section is None:
        return None
    where = "tls_server_config"
    section = _mapping(path, where, section, _TLS_KEYS)

    def file(key: str) -> Path | None:
        text = _string(path, f"{where}.{key}", section.get(key, ""))
        return path.parent / text if text else None

    cert, key, ca = file("cert_file"), file("key_file"), file("client_ca_file")
    if cert is None:
        raise _problem(path, f"{where}.cert_file", "missing")
    if key is None:
        raise _problem(path, f"{where}.key_file", "missing")
    auth = _string(path, f"{where}.client_auth_type", section.get("client_auth_type", ""))
    if auth not in _CLIENT_AUTH:
        raise _problem(
            path,
            f"{where}.client_auth_type",
            f"{auth!r} is not supported (use one of NoClientCert, VerifyClientCertIfGiven, "
            "RequireAndVerifyClientCert)",
        )
    verify = _CLIENT_AUTH[auth]
    if ca is not None and verify == ssl.CERT_NONE:
        raise _problem(path, f"{where}.client_ca_file", "set without a client_auth_type")
    if ca is None and verify != ssl.CERT_NONE:
        raise _problem(path, f"{where}.client_auth_type", f"{auth} needs a client_ca_file")
    versions = []
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        text = _string(path, f"{where}.{name}", section.get(name, default))
        if text not in _VERSIONS:
            raise _problem(
                path, f"{where}.{name}", f"{text!r} is not one of {', '.join(_VERSIONS)}"
            )
        versions.append(_VERSIONS[text])
    if versions[0] > versions[1]:
        raise _problem(path, f"{where}.min_version", "is above max_version")
    return TLSSettings(cert, key, ca, verify, versions[0], versions[1])


def _headers(path: Path, section: Any) -> dict[str, str]:
    if section is None:
        return {}
    where = "http_server_config"
    section = _mapping(path, where, section, _HTTP_KEYS)
    # http2 is accepted so a toolkit file loads as is; this server speaks HTTP/1.1 only.
    if not isinstance(section.get("http2", True), bool):
        raise _problem(path, f"{where}.http2", "expected true or false")
    headers = _mapping(path, f"{where}.headers", section.get("headers") or {}, _HEADERS)
    out = {}
    for name, value in headers.items():
        text = _string(path, f"{where}.headers.{name}", value)
        if "\r" in text or "\n" in text:
            raise _problem(path, f"{where}.headers.{name}", "contains a line break")
        if text:
            out[name] = text
    return out


def _users(path: Path, section: Any) -> dict[str, bytes]:
    if section is None:
        return {}
    where = "basic_auth_users"
    if not isinstance(section, dict):
        raise _problem(path, where, f"expected a mapping, got {type(section).__name__}")
    users = {}
    for user, hashed in section.items():
        name = _string(path, where, user)
        if not name or ":" in name:
            raise _problem(path, f"{where}.{name}", "a user name must be non-empty, without ':'")
        text = _string(path, f"{where}.{name}", hashed)
        if not _BCRYPT.match(text):
            # Never echo the value: it may be a plain-text password put there by mistake.
            raise _problem(path, f"{where}.{name}", "not a bcrypt hash ($2a$, $2b$ or $2y$)")
        users[name] = text.encode()
    return users


class BasicAuth:
    """Checks `Authorization: Basic` headers against bcrypt hashes, caching verdicts briefly.

    bcrypt is slow on purpose (tens of milliseconds at cost 10) and Prometheus sends the same
    credentials on every scrape, so a verdict is kept for `ttl_s`, keyed by an HMAC of the
    credentials under a per-process random key (no password is kept in memory). One bcrypt
    runs at a time: a flood of wrong passwords costs one core, not all of them. An unknown
    user is checked against a decoy hash of the same cost, so timing does not tell which user
    names exist.
    """

    def __init__(
        self, users: Mapping[str, bytes], ttl_s: float = 120.0, max_cached: int = 256
    ) -> None:
        self._users = dict(users)
        self._ttl_s = ttl_s
        self._max_cached = max_cached
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, tuple[bool, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()
        self._decoy = bcrypt.hashpw(
            secrets.token_bytes(16), bcrypt.gensalt(max(map(_cost, users.values()), default=10))
        )
        self.bcrypt_checks = 0  # for tests and curiosity: how often the cache missed

    def allows(self, header: str | None) -> bool:
        credentials = _parse_basic(header)
        return credentials is not None and self.verify(*credentials)

    def verify(self, user: str, password: str) -> bool:
        user_bytes, password_bytes = user.encode(), password.encode()
        digest = hmac.new(
            self._key,
            len(user_bytes).to_bytes(4, "big") + user_bytes + password_bytes,
            hashlib.sha256,
        ).digest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None and hit[1] > now:
                return hit[0]
        with self._bcrypt_lock:
            hashed = self._users.get(user)
            self.bcrypt_checks += 1
            # checkpw compares in constant time; the decoy keeps unknown users as slow.
            ok = bcrypt.checkpw(password_bytes, hashed or self._decoy) and hashed is not None
        with self._lock:
            self._cache[digest] = (ok, now + self._ttl_s)
            self._cache.move_to_end(digest)
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        return ok


def _cost(hashed: bytes) -> int:
    match = _BCRYPT.match(hashed.decode(errors="replace"))
    return int(match.group(1)) if match else 10


def _parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None
