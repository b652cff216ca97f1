"""The serve stage: `/metrics`, `/healthz` and `/readyz` over HTTP.

`/metrics` is a small handler of our own rather than prometheus-client's `start_http_server`,
because the commit point can move to "after a scrape": the handler asks a `ScrapeObserver` for a
token *before* collecting and hands it back only *after* the response was written completely.
Scrapes are serialized: a collect is not an atomic snapshot, and two overlapping ones would only
compete for the GIL.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from consumer.exposition import TextRenderer

__all__ = ["HealthState", "MetricsServer", "ScrapeObserver"]

log = logging.getLogger(__name__)


class ScrapeObserver(Protocol):
    def before_collect(self) -> object: ...
    def after_response(self, token: object) -> None: ...


class _NoObserver:
    def before_collect(self) -> object:
        return None

    def after_response(self, token: object) -> None:
        return None


@dataclass
class HealthState:
    """What /healthz and /readyz report; written by the worker loop, read by HTTP threads."""

    stall_after_s: float = 120.0
    heartbeat: float = field(default_factory=time.monotonic)
    assigned: int = 0
    not_ready: dict[str, str] = field(default_factory=dict)

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def alive(self) -> tuple[bool, str]:
        idle = time.monotonic() - self.heartbeat
        if idle > self.stall_after_s:
            return False, f"worker loop stalled for {idle:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.not_ready:
            return False, "; ".join(f"{k}: {v}" for k, v in sorted(self.not_ready.items()))
        if self.assigned == 0:
            return False, "no partitions assigned"
        return True, f"ok: {self.assigned} partitions assigned"


class MetricsServer:
    """A threaded HTTP server on its own daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: HealthState,
        observer: ScrapeObserver | None = None,
    ) -> None:
        handler = _make_handler(registry, health, observer or _NoObserver(), threading.Lock())
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


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A scraper hanging up mid-request is routine; socketserver would print a traceback.
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("HTTP client %s went away", client_address, exc_info=True)
        else:
            log.error("request from %s failed", client_address, exc_info=True)


def _make_handler(
    registry: CollectorRegistry,
    health: HealthState,
    observer: ScrapeObserver,
    scrape_lock: threading.Lock,
) -> type[BaseHTTPRequestHandler]:
    renderer = TextRenderer()  # used under scrape_lock only

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "usage-consumer"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._metrics()
            elif path == "/healthz":
                self._probe(*health.alive())
            elif path == "/readyz":
                self._probe(*health.ready())
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found: try /metrics\n", "text/plain")

        def _metrics(self) -> None:
            with scrape_lock:
                token = observer.before_collect()
                accept = self.headers.get("Accept", "")
                try:
                    if _wants_only_openmetrics(accept):
                        encoder, content_type = choose_encoder(accept)
                        self._send(HTTPStatus.OK, encoder(registry), content_type)
                    elif self.request_version == "HTTP/1.0":  # no chunked encoding
                        self._send(HTTPStatus.OK, renderer.render(registry), _TEXT_FORMAT)
                    else:
                        # Prometheus accepts the classic text format too (it lists it, and
                        # */*); this renderer writes it several times faster than
                        # generate_latest, and sends it as it goes.
                        self._send_chunked(renderer.chunks(registry), _TEXT_FORMAT)
                    self.wfile.flush()
                except OSError as exc:
                    log.warning("scrape response not delivered: %s", exc)
                    self.close_connection = True
                    return
                observer.after_response(token)

        def _send_chunked(self, chunks: Iterator[str], content_type: str) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in chunks:
                data = chunk.encode("utf-8")
                self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")

        def _probe(self, ok: bool, detail: str) -> None:
            status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(status, detail.encode() + b"\n", "text/plain; charset=utf-8")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Scrapes every few seconds would drown the log; errors are logged where they occur.
            return

    return Handler
