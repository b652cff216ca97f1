"""The serve stage: `/metrics`, `/healthz`, `/readyz`, and the status page `/` and `/status`.

`/metrics` is a small handler of our own rather than prometheus-client's `start_http_server`,
because the commit point can move to "after a scrape": the handler asks a `ScrapeObserver` for a
token *before* collecting and hands it back only *after* the response was written completely.
Scrapes are serialized: a collect is not an atomic snapshot, and two overlapping ones would only
compete for the GIL. The status page collects the registry too (series counts), so it takes the
same lock: the usage reader keeps its last collect in one slot, and two collects at once could
hand a scrape an empty one.

A scraper that accepts gzip (Prometheus always does) gets the exposition gzip-compressed as it is
written (`GZIP_LEVEL`): tens of megabytes of text become a few, for little CPU.

With a web configuration (consumer.web.webconfig) the server speaks HTTPS only and asks for basic
auth on every path except `/healthz` and `/readyz`: kubelet probes cannot send credentials
without writing the password into the pod spec, and those two say no more than "ok" or why the
worker is not ready. `/metrics`, `/` and `/status` (which shows prefixes of rejected messages)
need credentials. The TLS handshake runs in the connection's own thread, bounded by a timeout,
so a client that connects and stalls holds up nobody else; a plain-HTTP request to the TLS port
gets a 400 that says so instead of a reset.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import socket
import sys
import threading
import zlib
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder

from consumer.exposition.text import TextRenderer
from consumer.pipeline.health import HealthState
from consumer.web.webconfig import BasicAuth, TLSContexts, WebConfig

__all__ = ["GZIP_LEVEL", "MetricsServer", "ScrapeObserver", "StatusView", "accepts_gzip"]

log = logging.getLogger(__name__)


class ScrapeObserver(Protocol):
    def before_collect(self) -> object: ...
    def after_response(self, token: object) -> None: ...


class StatusView(Protocol):
    """The status page in both renderings (consumer.web.status); called under the scrape lock."""

    def html(self) -> bytes: ...
    def json(self) -> bytes: ...


class _NoObserver:
    def before_collect(self) -> object:
        return None

    def after_response(self, token: object) -> None:
        return None


class MetricsServer:
    """A threaded HTTP(S) server on its own daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: HealthState,
        observer: ScrapeObserver | None = None,
        *,
        status: StatusView | None = None,
        web: WebConfig | None = None,
        responses: Counter | None = None,
    ) -> None:
        """`responses`, a counter with one label (the content encoding), counts the /metrics
        responses written completely."""
        auth = BasicAuth(web.users) if web is not None and web.users else None
        handler = _make_handler(
            registry,
            health,
            observer or _NoObserver(),
            threading.Lock(),
            status=status,
            auth=auth,
            extra_headers=web.headers if web is not None else None,
            responses=responses,
        )
        if web is not None and web.tls is not None:
            self.scheme = "https"
            self._server: _QuietServer = _TLSServer((host, port), handler, TLSContexts(web.tls))
        else:
            self.scheme = "http"
            self._server = _QuietServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


_TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


def _wants_only_openmetrics(accept: str) -> bool:
    return "openmetrics" in accept and "text/plain" not in accept and "*/*" not in accept


#: zlib level of compressed scrapes. The exposition repeats itself line after line (the same
#: label sets, bucket after bucket), so the fastest level already shrinks it more than tenfold;
#: higher levels cost several times the CPU for a few percent (make bench, "Compressed scrapes").
GZIP_LEVEL = 1


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (RFC 9110: `gzip` or `*`, q > 0)."""
    allowed: dict[str, bool] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        allowed[coding.strip().lower()] = quality > 0
    return allowed.get("gzip", allowed.get("x-gzip", allowed.get("*", False)))


def gzip_chunks(chunks: Iterator[str], level: int = GZIP_LEVEL) -> Iterator[bytes]:
    """`chunks`, UTF-8 encoded and gzip-compressed as one stream, as they are written."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: a gzip header
    for chunk in chunks:
        data = compressor.compress(chunk.encode("utf-8"))
        if data:
            yield data
    yield compressor.flush()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A scraper hanging up mid-request is routine; socketserver would print a traceback.
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("HTTP client %s went away", client_address, exc_info=True)
        else:
            log.error("request from %s failed", client_address, exc_info=True)


_HANDSHAKE_TIMEOUT_S = 10.0
_TLS_HANDSHAKE_RECORD = b"\x16"
_PLAIN_TO_TLS_BODY = b"Client sent an HTTP request to an HTTPS server.\n"
_PLAIN_TO_TLS = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%b"
    % (len(_PLAIN_TO_TLS_BODY), _PLAIN_TO_TLS_BODY)
)


class _TLSServer(_QuietServer):
    """Wraps each accepted connection in TLS, in that connection's thread."""

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        contexts: TLSContexts,
    ) -> None:
        super().__init__(address, handler)
        self._contexts = contexts

    def finish_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        request.settimeout(_HANDSHAKE_TIMEOUT_S)
        first = request.recv(1, socket.MSG_PEEK)
        if not first:
            return
        if first != _TLS_HANDSHAKE_RECORD:
            # Read the request first: closing with unread data would reset the connection
            # and lose the answer.
            request.recv(65_536)
            request.sendall(_PLAIN_TO_TLS)
            return
        # Raises on a failed handshake (an untrusted client, wrong versions): an OSError,
        # logged at debug level like any client that goes away.
        conn = self._contexts.current().wrap_socket(request, server_side=True)
        conn.settimeout(None)  # as plain connections: a scrape of a big registry takes time
        try:
            super().finish_request(conn, client_address)
        finally:
            # shutdown_request() gets the original socket, detached by wrap_socket.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            conn.close()


_OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes: see the module docstring
_CHALLENGE = 'Basic realm="usage-consumer", charset="UTF-8"'
# The status page is ours alone: no scripts, no outside assets, nothing to frame it.
_HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _make_handler(
    registry: CollectorRegistry,
    health: HealthState,
    observer: ScrapeObserver,
    scrape_lock: threading.Lock,
    *,
    status: StatusView | None = None,
    auth: BasicAuth | None = None,
    extra_headers: Mapping[str, str] | None = None,
    responses: Counter | None = None,
) -> type[BaseHTTPRequestHandler]:
    renderer = TextRenderer()  # used under scrape_lock only
    always = dict(extra_headers or {})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "usage-consumer"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if (
                auth is not None
                and path not in _OPEN_PATHS
                and not auth.allows(self.headers.get("Authorization"))
            ):
                self._send(
                    HTTPStatus.UNAUTHORIZED,
                    b"401 unauthorized\n",
                    "text/plain; charset=utf-8",
                    {"WWW-Authenticate": _CHALLENGE},
                )
            elif path == "/metrics":
                self._metrics()
            elif path == "/healthz":
                self._probe(*health.alive())
            elif path == "/readyz":
                self._probe(*health.ready())
            elif path in ("/", "/status") and status is not None:
                with scrape_lock:
                    if path == "/":
                        body, content_type = status.html(), "text/html; charset=utf-8"
                    else:
                        body, content_type = status.json(), "application/json"
                self._send(HTTPStatus.OK, body, content_type, _HTML_HEADERS)
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found: try /metrics\n", "text/plain")

        def _metrics(self) -> None:
            with scrape_lock:
                token = observer.before_collect()
                accept = self.headers.get("Accept", "")
                compress = accepts_gzip(self.headers.get("Accept-Encoding", ""))
                try:
                    if _wants_only_openmetrics(accept):
                        encoder, content_type = choose_encoder(accept)
                        self._send_body(encoder(registry), content_type, compress)
                    elif self.request_version == "HTTP/1.0":  # no chunked encoding
                        self._send_body(renderer.render(registry), _TEXT_FORMAT, compress)
                    else:
                        # Prometheus accepts the classic text format too (it lists it, and
                        # */*); this renderer writes it several times faster than
                        # generate_latest, and sends it as it goes, compressed as it goes.
                        chunks = renderer.chunks(registry)
                        if compress:
                            self._send_chunked(gzip_chunks(chunks), _TEXT_FORMAT, gzipped=True)
                        else:
                            self._send_chunked(
                                (c.encode("utf-8") for c in chunks), _TEXT_FORMAT, gzipped=False
                            )
                    self.wfile.flush()
                except OSError as exc:
                    log.warning("scrape response not delivered: %s", exc)
                    self.close_connection = True
                    return
                observer.after_response(token)
                if responses is not None:
                    responses.labels("gzip" if compress else "identity").inc()

        def _send_chunked(self, chunks: Iterator[bytes], content_type: str, gzipped: bool) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Vary", "Accept-Encoding")
            if gzipped:
                self.send_header("Content-Encoding", "gzip")
            self._end_headers()
            for data in chunks:
                if data:  # an empty chunk would end the body
                    self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")

        def _send_body(self, body: bytes, content_type: str, compress: bool) -> None:
            headers = {"Vary": "Accept-Encoding"}
            if compress:
                body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
                headers["Content-Encoding"] = "gzip"
            self._send(HTTPStatus.OK, body, content_type, headers)

        def _probe(self, ok: bool, detail: str) -> None:
            status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(status, detail.encode() + b"\n", "text/plain; charset=utf-8")

        def _send(
            self,
            code: HTTPStatus,
            body: bytes,
            content_type: str,
            headers: Mapping[str, str] | None = None,
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self._end_headers()
            self.wfile.write(body)

        def _end_headers(self) -> None:
            # The web configuration's headers (HSTS, say) go on every response.
            for name, value in always.items():
                self.send_header(name, value)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            # Scrapes every few seconds would drown the log; errors are logged where they occur.
            return

    return Handler
