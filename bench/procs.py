"""Measuring one subprocess (or a few): spawn, window, CPU, peak RSS, commits, scrapes.

The measured window of a run opens at its "start" (partitions assigned or first message, see
`Measured.mark_start`) and closes at "done" (its group's committed offsets reached the end of
every partition, or for raw consume its own report of having read the whole backlog). CPU
seconds are the process's user+system time over that window, read from /proc at both ends; peak
RSS is its VmHWM at "done". `os.wait4` then adds whole-life figures (start-up and shutdown
included) for the record.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.common import ProcSample, sample_proc

REPO = Path(__file__).resolve().parents[1]


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat: other load shows up here."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return float(total - idle), float(total)


def busy_fraction(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Share of all cores busy between two `machine_busy` readings (1.0 = every core busy)."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


@dataclass
class Measured:
    """A subprocess with its JSON-line progress reports, CPU/RSS samples and log file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    start: ProcSample | None = None
    start_t: float | None = None
    rusage: Any = None

    def spawn(self) -> Measured:
        self._log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONPATH": str(REPO), **(self.env or {})}
        self.spawn_t = time.time()
        self.proc = subprocess.Popen(
            list(self.argv),
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.cwd,
        )
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-out", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if not line.startswith("{"):
                continue
            report = json.loads(line)
            if report["event"] == "start":
                # Sampled as soon as the report arrives, so the window's CPU excludes start-up.
                self.mark_start(report["t"])
            with self._changed:
                self.events[report["event"]] = report
                self._changed.notify_all()

    def mark_start(self, t: float) -> None:
        if self.start is None:
            self.start = sample_proc(self.proc.pid)
            self.start_t = t

    def wait_event(self, name: str, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while name not in self.events:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    return self.events.get(name)
                self._changed.wait(min(remaining, 0.2))
            return self.events[name]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def sample(self) -> ProcSample | None:
        return sample_proc(self.proc.pid)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; reaps with wait4 for whole-life rusage."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while True:
                pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
                if pid:
                    self.rusage = rusage
                    self.proc.returncode = os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() > deadline:
                    self.proc.kill()
                    deadline += 10
                time.sleep(0.05)
        self._reader.join(timeout=10)
        self._log.close()
        return self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.rstrip().splitlines()[-lines:])


class CommitWatch:
    """Polls the broker for a group's committed offsets (the same view for every row)."""

    def __init__(self, bootstrap: str, topic: str, ends: Mapping[int, int]) -> None:
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._topic = topic
        self._ends = dict(ends)

    def committed(self, group: str) -> dict[int, int]:
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(self._topic, p) for p in self._ends]
        )
        result = self._admin.list_consumer_group_offsets([request])[group].result(timeout=10)
        return {tp.partition: tp.offset for tp in result.topic_partitions}

    def complete(self, group: str, targets: Mapping[int, int] | None = None) -> bool:
        """Whether `group` committed up to `targets` (default: the end of every partition)."""
        committed = self.committed(group)
        return all(committed.get(p, -1) >= end for p, end in (targets or self._ends).items())


class Scraper:
    """GETs /metrics of some workers every `interval` seconds, as a Prometheus would.

    Each completed scrape lets a scrape-mode worker commit what it covered. Bodies are read in
    full and dropped (parsing them here would take CPU from the measured process); only the
    last one is kept, for the final check.
    """

    def __init__(self, urls: Sequence[str], interval: float = 1.0) -> None:
        self.urls = list(urls)
        self.interval = interval
        self.durations: list[float] = []
        self.sizes: list[int] = []
        self.spans: list[tuple[float, float]] = []  # (began, ended) wall-clock per scrape
        self.failures = 0
        self.last_body: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(u,), name="scraper", daemon=True)
            for u in self.urls
        ]

    def start(self) -> Scraper:
        for t in self._threads:
            t.start()
        return self

    def busy_within(self, start: float, end: float) -> float:
        """Seconds of [start, end] during which a scrape was in progress (summed per worker)."""
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in self.spans)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def scrape(self, url: str) -> bytes:
        began, began_wall = time.monotonic(), time.time()
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (loopback http)
            body: bytes = resp.read()
        self.durations.append(time.monotonic() - began)
        self.spans.append((began_wall, time.time()))
        self.sizes.append(len(body))
        self.last_body[url] = body
        return body

    def _loop(self, url: str) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.scrape(url)
            except (OSError, urllib.error.URLError):
                self.failures += 1
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))


def wait_ready(urls: Sequence[str], procs: Sequence[Measured], timeout: float) -> float:
    """Poll /readyz until one of `urls` answers 200 (partitions assigned); returns when.

    Fails if a process exits meanwhile.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited during start-up:\n{p.log_tail()}")
        for url in urls:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        return time.time()
            except (OSError, urllib.error.URLError):
                pass
        time.sleep(0.05)
    raise RuntimeError(f"none of {list(urls)} ready after {timeout:.0f} s")


def counter_value(body: bytes, name: str) -> float | None:
    """The value of an unlabelled sample in an exposition, without a full parse."""
    prefix = name.encode() + b" "
    for line in body.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None
