"""Logging: one line per significant event, JSON for machines and plain text for people.

`configure` sets the root logger up once, at start-up: JSON lines when stderr is not a terminal
(containers, systemd, log shippers), the readable format when it is, or whichever `log_format`
asks for. Repeated warnings and errors are rate-limited: the same message from the same logger
(numbers ignored, so "after 335ms" and "after 512ms" are one message) is written at most once per
`window_s`; the next one that gets through says how many were held back, so a broker outage logs
a line every few seconds instead of thousands. Info lines (assignments, revocations, hand-overs)
are events, not repeats: they always pass.

librdkafka's own lines (`%3|...|FAIL|...`) come through the same logger: every Kafka client the
project builds gets `KAFKA_LOGGER` as its `logger` (consumer.settings renders it), so they share
the format and the rate limit; below DEBUG only its warnings and errors are shown.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from typing import IO, Literal

__all__ = ["KAFKA_LOGGER", "JsonFormatter", "LogFormat", "RepeatFilter", "configure"]

LogFormat = Literal["auto", "json", "text"]

#: The logger librdkafka's lines go to (served by the client's poll/consume calls).
KAFKA_LOGGER = "consumer.kafka.librdkafka"

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DIGITS = re.compile(r"\d+")
# librdkafka's own count of repeats, which would make one repeated line look like two.
_SUPPRESSED = re.compile(r", \d+ identical error\(s\) suppressed")
# Attributes every LogRecord has; anything else was passed in `extra=` and goes into the JSON.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, logger, msg, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class RepeatFilter(logging.Filter):
    """Lets a warning or error through at most once per `window_s` seconds per (logger, message
    with its numbers blanked); lower levels always pass."""

    def __init__(self, window_s: float = 10.0, max_keys: int = 10_000) -> None:
        super().__init__()
        self._window_s = window_s
        self._max_keys = max_keys
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # key -> (last shown, held)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = _SUPPRESSED.sub("", record.getMessage())
        key = (record.name, _DIGITS.sub("#", message))
        now = time.monotonic()
        with self._lock:
            last, held = self._seen.get(key, (float("-inf"), 0))
            if now - last < self._window_s:
                self._seen[key] = (last, held + 1)
                return False
            if len(self._seen) >= self._max_keys:
                self._seen.clear()  # many distinct templates: forget rather than grow
            self._seen[key] = (now, 0)
        if held:
            record.repeated = held  # JSON: a field; text: appended below
        return True


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        held = getattr(record, "repeated", 0)
        return f"{line} (and {held} more like it)" if held else line


def configure(
    level: str = "INFO",
    log_format: LogFormat = "auto",
    stream: IO[str] | None = None,
    repeat_window_s: float = 10.0,
) -> logging.Handler:
    """Route the root logger to `stream` (stderr) in the chosen format; returns the handler."""
    stream = stream if stream is not None else sys.stderr
    use_json = log_format == "json" or (log_format == "auto" and not _is_terminal(stream))
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else _TextFormatter(_TEXT_FORMAT))
    handler.addFilter(RepeatFilter(repeat_window_s))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # The SDK logs a warning per dropped measurement; the cardinality gauges report those.
    logging.getLogger("opentelemetry").setLevel(logging.ERROR)
    # librdkafka's info lines (BGQUEUE, GETPID, ...) are the client's business, unless debugging.
    kafka_level = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    logging.getLogger(KAFKA_LOGGER).setLevel(kafka_level)
    return handler


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
