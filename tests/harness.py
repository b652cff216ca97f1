"""Test harness: workers as real subprocesses, scraped over HTTP, and an independent oracle.

The oracle restates tracker-semantics.md in the Prometheus names a scraper sees; it does not
import the tracker, so a wrong rule in the port cannot hide behind the same rule in the test.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics import Counter as SdkCounter
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from consumer.exposition.cardinality import CardinalityCollector
from consumer.exposition.reader import UsageReader

Labels = frozenset[tuple[str, str]]
Series = dict[tuple[str, Labels], float]

COUNTERS = (
    "llm_token_usage_input_total",
    "llm_token_usage_output_total",
    "llm_token_total",
    "llm_token_cache_input_total",
    "llm_token_system_total",
    "llm_request_count_total",
    "llm_request_errors_total",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_exposition(text: str) -> Series:
    """Every sample as {(sample name, labels): value}.

    otel_scope_* labels are dropped, and so are empty-valued labels: the exporter gives every
    series of a family the same label names, filling absent ones with "", and to Prometheus an
    empty label is the same as no label.
    """
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset(
                (k, v) for k, v in sample.labels.items() if v and not k.startswith("otel_scope_")
            )
            out[(sample.name, labels)] = sample.value
    return out


def total(series: Series, name: str, **match: str) -> float:
    wanted = set(match.items())
    return sum(v for (n, labels), v in series.items() if n == name and wanted <= labels)


def _truncate(code: str, limit: int = 64) -> str:
    data = code.encode()[:limit]
    return data.decode("utf-8", "ignore")


def cache_read_tokens(event: Mapping[str, Any]) -> int:
    """Prompt-cache reads, sent as cache_read_tokens or under the seed's cache_input_tokens."""
    return int(event.get("cache_read_tokens", event.get("cache_input_tokens", 0)))


def expected_series(events: Iterable[Mapping[str, Any]]) -> Series:
    """What the tracker must export for these events: counters and histogram count/sum."""
    out: dict[tuple[str, Labels], float] = defaultdict(float)
    for e in events:
        labels = {
            "llm_provider": e["provider"],
            "llm_provider_uuid": e.get("provider_uuid", ""),
            "llm_model": e["model"],
            "llm_request_model": e.get("request_model", ""),
            "llm_scenario": e.get("scenario", ""),
            "llm_streaming": "true" if e.get("streamed", False) else "false",
            "llm_response_status": e["status"],
        }
        for key, attr in (
            ("rule_uuid", "llm_rule_uuid"),
            ("user_tier", "llm_user_tier"),
            ("error_code", "llm_error_code"),
        ):
            if e.get(key):
                labels[attr] = _truncate(e[key]) if key == "error_code" else e[key]
        base = frozenset((k, v) for k, v in labels.items() if v)  # see parse_exposition
        inp, outp = e.get("input_tokens", 0), e.get("output_tokens", 0)
        cache, system = cache_read_tokens(e), e.get("system_tokens", 0)
        latency = e.get("latency_ms", 0)
        if inp > 0:
            out[("llm_token_usage_input_total", base)] += inp
        if outp > 0:
            out[("llm_token_usage_output_total", base)] += outp
        if inp + outp > 0:
            out[("llm_token_total", base)] += inp + outp
        if cache > 0:
            out[("llm_token_cache_input_total", base | {("llm_token_type", "cache")})] += cache
        if system > 0:
            out[("llm_token_system_total", base | {("llm_token_type", "system")})] += system
        out[("llm_request_count_total", base)] += 1
        if latency > 0:
            out[("llm_request_duration_milliseconds_count", base)] += 1
            out[("llm_request_duration_milliseconds_sum", base)] += float(latency)
        if e["status"] == "error":
            out[("llm_request_errors_total", base)] += 1
    return dict(out)


def usage_series(series: Series) -> Series:
    """The scraped counters plus histogram count/sum: the part the oracle predicts."""
    names = {*COUNTERS, "llm_request_duration_milliseconds_count"}
    names.add("llm_request_duration_milliseconds_sum")
    return {k: v for k, v in series.items() if k[0] in names}


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (-1001 where none)."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = probe.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        probe.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """The high watermark per partition."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-watermarks"})
    try:
        return {
            p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        probe.close()


def read_topic(bootstrap: str, topic: str) -> list[Message]:
    """Everything in partition 0 of `topic`, from the beginning up to its high watermark."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}"})
    try:
        end = reader.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
        reader.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out: list[Message] = []
        deadline = time.monotonic() + 30
        while len(out) < end and time.monotonic() < deadline:
            for msg in reader.consume(500, timeout=0.5):
                assert msg.error() is None, msg.error()
                out.append(msg)
        assert len(out) == end
        return out
    finally:
        reader.close()


class WorkerProcess:
    """`python -m consumer run` as a subprocess, with its log kept in a file."""

    running: ClassVar[set[WorkerProcess]] = set()  # started and not yet stopped

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group_id: str,
        log_dir: Path,
        *extra_args: str,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "consumer",
            "run",
            "--bootstrap-servers",
            bootstrap,
            "--topic",
            topic,
            "--group-id",
            group_id,
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.port),
            "--statistics-interval-ms",
            "1000",
            *extra_args,
        ]
        # Text logs: tests read them line by line (JSON, the default off a terminal, is tested
        # in tests/test_logs.py).
        self.env = {"USAGE_CONSUMER_LOG_FORMAT": "text", **os.environ, **(env or {})}
        self.log_path = log_dir / f"worker-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env
        )
        WorkerProcess.running.add(self)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def scrape(self) -> Series:
        status, body = self.get("/metrics")
        assert status == 200, body
        return parse_exposition(body)

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_for(lambda: self.get("/readyz")[0] == 200, timeout, "ready")

    def wait_for(self, condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if condition():
                    return
            except (OSError, urllib.error.URLError, http.client.HTTPException):
                pass  # not serving yet, or a response cut short
            time.sleep(0.2)
        raise AssertionError(f"worker not {what} after {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send `sig` (SIGKILL for kill -9) and wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()
            WorkerProcess.running.discard(self)

    def kill(self) -> None:
        self.stop(signal.SIGKILL, 10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def dump(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def twin_registries(limit: int) -> tuple[CollectorRegistry, CollectorRegistry, MeterProvider]:
    """One MeterProvider, two readers: the worker's (`UsageReader` under `CardinalityCollector`)
    on the first registry, the OpenTelemetry Prometheus exporter on the second, both with
    `limit` as the cardinality limit, so the same measurements can be compared byte for byte."""
    limits = {SdkCounter: limit, SdkHistogram: limit}
    reader = UsageReader(cardinality_limits=limits)
    theirs = CollectorRegistry()
    exporter = PrometheusMetricReader(
        disable_target_info=True,
        scope_info_enabled=False,
        registry=theirs,
        cardinality_limits=limits,
    )
    provider = MeterProvider(
        metric_readers=[reader, exporter],
        exemplar_filter=AlwaysOffExemplarFilter(),
        shutdown_on_exit=False,
    )
    ours = CollectorRegistry(auto_describe=True)
    ours.register(CardinalityCollector(reader, limit))
    return ours, theirs, provider
