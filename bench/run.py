"""`make bench`: the worker against its floor, a naive version and a peer, on a real local broker.

    .venv/bin/python -m bench.run [--events N] [--reps R] ...   (or BENCH_EVENTS, BENCH_REPS, ...)

One run: start a Kafka broker in a temporary directory (consumer.devtools.broker), produce a backlog
of realistic events (consumer.devtools.produce.synthetic_events via `python -m consumer produce`),
then for every repetition consume that same backlog once per row, each from a fresh consumer group,
in an order rotated per repetition:

  raw     bench/raw_consume.py: read the messages and nothing else (the floor)
  worker  `python -m consumer run`, as shipped (scrape mode, metrics profile llm), with a
          scraper GETting /metrics every 5 s so that its commits advance
  worker_genai, worker_both
          the same worker with `--metrics-profile genai` or `--metrics-profile both`: the
          profiles' CPU per event over the worker row's, per repetition, is checked against
          bench.config.CPU_TARGETS (genai <= 1.3, both <= 2.0)
  naive   bench/naive.py: decode, record_usage per event, commit per batch
  quix    bench/quix_peer.py: the same job in Quix Streams (its own venv, bench/.venv-quix)
  worker_x2  two workers in one group (the scale-out comparison; see --scale-reps)

Then the fleet (run_fleet: usage series summed over 1, 2 and 3 workers of one group, with
attribute keys and with event-id keys), the decoders on the backlog's mix (bench/decode.py: the
share the fast path takes), the scrape benchmark (bench/scrape.py, once per metrics profile:
llm, genai, both; then with and without gzip at 1x and 5x the sets: bytes on the wire and CPU
per scrape) and the end-to-end latency test (bench/latency.py, the llm profile).

Flags and their variables (`--help` for all): --events BENCH_EVENTS, --slow-events
BENCH_SLOW_EVENTS, --reps BENCH_REPS, --partitions BENCH_PARTITIONS, --rows BENCH_ROWS (a
comma-separated subset of raw,worker,worker_genai,worker_both,naive,quix, or none), --scale-reps
BENCH_SCALE_REPS, --latency-seconds BENCH_LATENCY_SECONDS, --latency-rate BENCH_LATENCY_RATE,
--scrape-sets BENCH_SCRAPE_SETS, --scrape-reps BENCH_SCRAPE_REPS, --fleet-events
BENCH_FLEET_EVENTS, --docs BENCH_DOCS.

Results: bench/results/<UTC time>.json (the newest by name is the latest; no copies are kept);
docs/benchmarks.md and docs/benchmarks.png are regenerated from it (bench/report.py).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench import report
from bench.config import (
    BEFORE_ROW,
    ROWS,
    SCRAPE_PROFILES,
    SLOW_ROWS,
    WORKER_PROFILES,
    Config,
)
from bench.latency import run_latency
from bench.procs import (
    REPO,
    CommitWatch,
    Measured,
    Scraper,
    busy_fraction,
    counter_value,
    machine_busy,
    wait_ready,
)
from consumer.devtools import broker
from consumer.kafka.topics import ensure_topics

WORKER_SCRAPE_S = 5.0
QUIX_VENV = REPO / "bench" / ".venv-quix"
QUIX_REQUIREMENTS = REPO / "bench" / "requirements-quix.txt"
RESULTS = REPO / "bench" / "results"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Configuration: flags win over BENCH_* variables, which win over the defaults.


def parse_config(argv: list[str] | None) -> Config:
    d = Config()
    env = os.environ
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--events",
        type=int,
        default=int(env.get("BENCH_EVENTS", d.events)),
        help=f"backlog size (env BENCH_EVENTS; default {d.events:,})",
    )
    p.add_argument(
        "--slow-events",
        type=int,
        default=int(env.get("BENCH_SLOW_EVENTS", d.slow_events)),
        help="how much of the backlog the naive and Quix rows drain "
        f"(env BENCH_SLOW_EVENTS; default {d.slow_events:,})",
    )
    p.add_argument(
        "--reps",
        type=int,
        default=int(env.get("BENCH_REPS", d.reps)),
        help=f"repetitions of the rows (env BENCH_REPS; default {d.reps})",
    )
    p.add_argument("--partitions", type=int, default=int(env.get("BENCH_PARTITIONS", d.partitions)))
    p.add_argument(
        "--rows",
        default=env.get("BENCH_ROWS", ",".join(d.rows)),
        help=f"comma-separated subset of {','.join(ROWS)}, or none (env BENCH_ROWS)",
    )
    p.add_argument(
        "--scale-reps",
        type=int,
        default=int(env.get("BENCH_SCALE_REPS", d.scale_reps)),
        help="in how many repetitions two workers also drain the backlog (0: never)",
    )
    p.add_argument(
        "--latency-seconds",
        type=float,
        default=float(env.get("BENCH_LATENCY_SECONDS", d.latency_seconds)),
        help="0 skips the latency test",
    )
    p.add_argument(
        "--latency-rate", type=float, default=float(env.get("BENCH_LATENCY_RATE", d.latency_rate))
    )
    p.add_argument(
        "--scrape-sets",
        type=int,
        default=int(env.get("BENCH_SCRAPE_SETS", d.scrape_sets)),
        help="attribute sets of the scrape benchmark, run per metrics profile "
        "(env BENCH_SCRAPE_SETS; 0 skips it)",
    )
    p.add_argument(
        "--scrape-reps", type=int, default=int(env.get("BENCH_SCRAPE_REPS", d.scrape_reps))
    )
    p.add_argument(
        "--fleet-events",
        type=int,
        default=int(env.get("BENCH_FLEET_EVENTS", d.fleet_events)),
        help="events of the fleet section, per key choice and worker count "
        f"(env BENCH_FLEET_EVENTS; default {d.fleet_events:,}; 0 skips it)",
    )
    p.add_argument(
        "--before-ref",
        default=env.get("BENCH_BEFORE_REF", d.before_ref),
        help="a git ref whose worker runs as one more row, worker_before, beside today's "
        "(env BENCH_BEFORE_REF; default: none)",
    )
    p.add_argument(
        "--docs",
        type=int,
        choices=[0, 1],
        default=int(env.get("BENCH_DOCS", 1)),
        help="1: regenerate docs/benchmarks.md and .png from this run",
    )
    a = p.parse_args(argv)
    rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    rows = [] if rows == ["none"] else rows  # --rows none: only the scrape and latency tests
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    if a.events < 1 or a.reps < 1 or a.partitions < 1 or a.slow_events < 1:
        p.error("--events, --slow-events, --reps and --partitions must be at least 1")
    return Config(
        events=a.events,
        slow_events=min(a.slow_events, a.events),
        reps=a.reps,
        partitions=a.partitions,
        rows=rows,
        scale_reps=min(a.scale_reps, a.reps),
        latency_seconds=a.latency_seconds,
        latency_warmup=min(d.latency_warmup, a.latency_seconds / 3),
        latency_rate=a.latency_rate,
        scrape_sets=a.scrape_sets,
        scrape_reps=a.scrape_reps,
        fleet_events=a.fleet_events,
        docs=bool(a.docs),
        before_ref=a.before_ref,
    )


def command_line(cfg: Config) -> str:
    """The exact command that reproduces this run's sizes."""
    d = Config()
    env = [f"BENCH_EVENTS={cfg.events}", f"BENCH_REPS={cfg.reps}"]
    if cfg.slow_events != min(d.slow_events, cfg.events):
        env.append(f"BENCH_SLOW_EVENTS={cfg.slow_events}")
    if cfg.partitions != d.partitions:
        env.append(f"BENCH_PARTITIONS={cfg.partitions}")
    if cfg.rows != d.rows:
        env.append(f"BENCH_ROWS={','.join(cfg.rows) or 'none'}")
    if cfg.scale_reps != d.scale_reps:
        env.append(f"BENCH_SCALE_REPS={cfg.scale_reps}")
    if cfg.latency_seconds != d.latency_seconds:
        env.append(f"BENCH_LATENCY_SECONDS={cfg.latency_seconds:g}")
    if cfg.latency_rate != d.latency_rate:
        env.append(f"BENCH_LATENCY_RATE={cfg.latency_rate:g}")
    if cfg.scrape_sets != d.scrape_sets:
        env.append(f"BENCH_SCRAPE_SETS={cfg.scrape_sets}")
    if cfg.scrape_reps != d.scrape_reps:
        env.append(f"BENCH_SCRAPE_REPS={cfg.scrape_reps}")
    if cfg.fleet_events != d.fleet_events:
        env.append(f"BENCH_FLEET_EVENTS={cfg.fleet_events}")
    if cfg.before_ref:
        env.append(f"BENCH_BEFORE_REF={cfg.before_ref}")
    return " ".join([*env, "make bench"])


# ---------------------------------------------------------------------------------------------
# The Quix Streams venv and the machine


def ensure_quix_venv() -> Path:
    """bench/.venv-quix, (re)built when requirements-quix.txt changes; returns its python."""
    python = QUIX_VENV / "bin" / "python"
    digest = hashlib.sha256(QUIX_REQUIREMENTS.read_bytes()).hexdigest()
    stamp = QUIX_VENV / ".requirements-sha256"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    log(f"building {QUIX_VENV.relative_to(REPO)} from {QUIX_REQUIREMENTS.name} (once)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(QUIX_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(QUIX_REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(digest + "\n")
    return python


_VERSIONS_SNIPPET = """
import importlib.metadata as m, json, confluent_kafka
names = {names!r}
out = {{}}
for n in names:
    try:
        out[n] = m.version(n)
    except m.PackageNotFoundError:
        pass
out["librdkafka"] = confluent_kafka.libversion()[0]
print(json.dumps(out))
"""

_PACKAGES = [
    "confluent-kafka",
    "opentelemetry-sdk",
    "opentelemetry-exporter-prometheus",
    "prometheus-client",
    "pydantic",
    "pydantic-core",
    "quixstreams",
    "orjson",
    "matplotlib",
]


def versions(python: Path | str) -> dict[str, str]:
    out = subprocess.run(
        [str(python), "-c", _VERSIONS_SNIPPET.format(names=_PACKAGES)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def machine(quix_python: Path) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as f:
        mem_kib = int(f.readline().split()[1])
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "java": (java.stderr.splitlines() or ["?"])[0],
        "kafka": broker.KAFKA_VERSION,
        "load_average_at_start": os.getloadavg(),
        "libraries": versions(sys.executable),
        "libraries_quix_venv": versions(quix_python),
    }


def code_state() -> dict[str, Any]:
    """The commit measured, which measured files differ from it, and a hash of their contents.

    Taken at the start and at the end of a run: others edit consumer/ while benchmarks run, and
    every row's subprocess imports the code as it is when it starts. Read-only git commands.
    """

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "--no-optional-locks", *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
        )
        return done.stdout.strip()

    digest = hashlib.sha256()
    for path in sorted([*REPO.glob("consumer/*.py"), *REPO.glob("schemas/*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    dirty = git("status", "--porcelain", "--", "consumer", "schemas")
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted": dirty.splitlines(),
        "sources_sha256": digest.hexdigest(),
    }


# ---------------------------------------------------------------------------------------------
# One run of one row


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Bench:
    cfg: Config
    bootstrap: str
    topic: str
    ends: dict[int, int]
    workdir: Path
    quix_python: Path
    commits: CommitWatch

    @property
    def backlog(self) -> int:
        return sum(self.ends.values())

    def targets(self, row: str) -> dict[int, int]:
        """The offsets a row drains to: the whole backlog, or for the slow rows the first
        `slow_events` of it, each partition's share in proportion."""
        if row not in SLOW_ROWS or self.cfg.slow_events >= self.backlog:
            return dict(self.ends)
        share = self.cfg.slow_events / self.backlog
        return {p: min(end, math.ceil(end * share)) for p, end in self.ends.items()}

    def worker(
        self, group: str, name: str, topic: str | None = None, profile: str | None = None
    ) -> tuple[Measured, str]:
        """`python -m consumer run`; with `profile`, `--metrics-profile profile` (None: as
        shipped, the default profile)."""
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "consumer",
            "run",
            "--bootstrap-servers",
            self.bootstrap,
            "--topic",
            topic or self.topic,
            "--group-id",
            group,
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(port),
        ]
        if profile is not None:
            argv += ["--metrics-profile", profile]
        log_path = self.workdir / "logs" / f"{name}.log"
        return Measured(name, argv, log_path, cwd=self.workdir), f"http://127.0.0.1:{port}"

    def program(self, row: str, group: str, name: str) -> Measured:
        python = str(self.quix_python) if row == "quix" else sys.executable
        module = {"raw": "bench.raw_consume", "naive": "bench.naive", "quix": "bench.quix_peer"}
        argv = [
            python,
            "-m",
            module[row],
            "--bootstrap-servers",
            self.bootstrap,
            "--topic",
            self.topic,
            "--group-id",
            group,
        ]
        if row == "raw":
            argv += ["--expected", str(self.backlog)]
        return Measured(name, argv, self.workdir / "logs" / f"{name}.log", cwd=self.workdir)


def export_before(b: Bench) -> bool:
    """The packages of `--before-ref` into workdir/before (git archive); False, logged, if the
    ref is unknown."""
    target = b.workdir / "before"
    target.mkdir()
    archive = subprocess.run(
        ["git", "archive", b.cfg.before_ref, "consumer", "schemas"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        log(f"--before-ref {b.cfg.before_ref}: {archive.stderr.decode().strip()}; row skipped")
        return False
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    log(f"worker_before: the worker at {b.cfg.before_ref}, beside today's")
    return True


def run_row(b: Bench, row: str, rep: int, position: int) -> dict[str, Any]:
    group = f"bench-{row}-r{rep}-{uuid.uuid4().hex[:8]}"
    name = f"{row}-r{rep}"
    targets = b.targets(row)
    events = sum(targets.values())
    timeout = 120 + events / 500  # no row is expected below 500 events/s
    scraper: Scraper | None = None
    urls: list[str] = []
    # The worker row runs as shipped (no flag); the other profiles' rows name theirs.
    profile = WORKER_PROFILES.get(row, "llm")
    flag = None if row in ("worker", "worker_x2") else profile
    if row in WORKER_PROFILES or row in ("worker_x2", BEFORE_ROW):
        count = 2 if row == "worker_x2" else 1
        flag = None if row == BEFORE_ROW else flag
        pairs = [b.worker(group, f"{name}-{i}", profile=flag) for i in range(count)]
        procs = [p for p, _ in pairs]
        urls = [u for _, u in pairs]
        if row == BEFORE_ROW:  # that ref's code first on the path (the venv is today's)
            procs[0].env = {"PYTHONPATH": str(b.workdir / "before")}
    else:
        procs = [b.program(row, group, name)]

    busy_before = machine_busy()
    for p in procs:
        p.spawn()
    spawned = min(p.spawn_t for p in procs)
    try:
        if urls:
            # The window opens when the first worker has partitions (/readyz turns 200).
            ready = wait_ready(urls, procs, timeout=120)
            for p in procs:
                p.mark_start(ready)
            # Every 5 s: more often than Prometheus usually scrapes (15-60 s), so the worker
            # pays for more scrapes here than in production. The window closes on commits,
            # which follow scrapes, so it includes up to 5 s of waiting at the end (measured
            # with 2 s instead: each scrape's GIL share cost more than the shorter wait saved,
            # 80,527 against 96,153 events/s).
            scraper = Scraper([u + "/metrics" for u in urls], interval=WORKER_SCRAPE_S).start()
        elif procs[0].wait_event("start", timeout=120) is None:
            raise RuntimeError(f"{name} never started:\n{procs[0].log_tail()}")

        deadline = time.monotonic() + timeout
        while True:
            if row == "raw":
                done = procs[0].wait_event("done", timeout=0.1)
                if done is not None:
                    done_t = float(done["t"])
                    break
            elif b.commits.complete(group, targets):
                done_t = time.time()
                break
            else:
                time.sleep(0.1)
            for p in procs:
                if not p.alive():
                    raise RuntimeError(f"{p.name} exited early:\n{p.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not finish within {timeout:.0f} s")
        ends = [p.sample() for p in procs]
        busy_after = machine_busy()

        recorded = None
        if scraper is not None:
            # One more scrape per worker for the check (it also covers anything still held).
            recorded = sum(
                counter_value(
                    scraper.scrape(u + "/metrics"), "usage_consumer_events_recorded_total"
                )
                or 0
                for u in urls
            )
    finally:
        if scraper is not None:
            scraper.stop()
        codes = [p.stop() for p in procs]

    starts = [p.start for p in procs]
    start_times = [p.start_t for p in procs if p.start_t is not None]
    if None in starts or None in ends or not start_times:
        raise RuntimeError(f"{name}: could not sample its process(es)")
    samples = [(s, e) for s, e in zip(starts, ends, strict=True) if s and e]
    start_t = min(start_times)
    window = done_t - start_t
    cpu = sum(e.cpu_s - s.cpu_s for s, e in samples)
    hwm = [e.hwm_kib / 1024 for _, e in samples]
    if recorded is None:
        reports = [p.events.get("stopped") or p.events.get("done") or {} for p in procs]
        recorded = sum(int(r.get("count", 0)) for r in reports)
    counted = int(recorded)
    result: dict[str, Any] = {
        "row": row,
        "rep": rep,
        "position": position,
        "group": group,
        "processes": len(procs),
        "events": events,
        "handled": counted,
        "startup_s": start_t - spawned,
        "window_s": window,
        "events_per_s": events / window,
        "cpu_s": cpu,
        "cpu_s_per_million": cpu / events * 1e6,
        "cores_used": cpu / window,
        "peak_rss_mib": max(hwm),
        "peak_rss_mib_sum": sum(hwm),
        "life_cpu_s": sum(p.rusage.ru_utime + p.rusage.ru_stime for p in procs if p.rusage),
        "machine_busy": busy_fraction(busy_before, busy_after),
        "exit_codes": codes,
    }
    if urls:
        result["metrics_profile"] = profile
    if scraper is not None:
        durations = sorted(scraper.durations)
        result["scrapes"] = {
            "count": len(durations),
            "median_s": durations[len(durations) // 2] if durations else None,
            "max_s": durations[-1] if durations else None,
            "total_s": sum(durations),
            "median_bytes": sorted(scraper.sizes)[len(scraper.sizes) // 2] if scraper.sizes else 0,
            "failures": scraper.failures,
            "interval_s": scraper.interval,
            # Share of the window a scrape was being served (per worker, averaged): the
            # worker's processing shares the GIL with it.
            "busy_share": scraper.busy_within(start_t, done_t) / window / len(urls),
        }
    log(
        f"{name}: {result['events_per_s']:,.0f} events/s, "
        f"{result['cpu_s_per_million']:.1f} CPU s/M, {result['peak_rss_mib']:.0f} MiB, "
        f"handled {counted:,} (window: {events:,}), machine {result['machine_busy']:.0%} busy"
    )
    return result


# ---------------------------------------------------------------------------------------------
# The fleet: series summed over the workers of one group, by key choice

FLEET_KEYS = ("attributes", "event-id")
FLEET_WORKERS = (1, 2, 3)


def _usage_lines(body: bytes) -> int:
    """Usage series in an exposition: its `llm_` sample lines (comments start with '#')."""
    return sum(1 for line in body.splitlines() if line.startswith(b"llm_"))


def run_fleet(b: Bench, events: int) -> dict[str, Any]:
    """For each key choice, N = 1, 2, 3 workers in one fresh group drain `events` synthetic
    events on a fresh topic with b's partition count; then the usage series of every worker's
    exposition are summed. The workers are all assigned before the events are produced, so no
    worker holds sets of partitions it gave away (idle series do not expire)."""
    out: dict[str, Any] = {"events": events, "partitions": b.cfg.partitions}
    for key in FLEET_KEYS:
        rows = []
        for count in FLEET_WORKERS:
            topic = f"bench-fleet-{key}-{count}-{uuid.uuid4().hex[:6]}"
            ensure_topics(b.bootstrap, [topic, f"{topic}.dlq"], partitions=b.cfg.partitions)
            group = f"bench-fleet-{uuid.uuid4().hex[:8]}"
            pairs = [b.worker(group, f"fleet-{key}-{count}-{i}", topic) for i in range(count)]
            procs, urls = [p for p, _ in pairs], [u for _, u in pairs]
            scraper: Scraper | None = None
            try:
                for p in procs:
                    p.spawn()
                for url, proc in zip(urls, procs, strict=True):
                    wait_ready([url], [proc], timeout=120)  # every worker has partitions
                scraper = Scraper([u + "/metrics" for u in urls], interval=WORKER_SCRAPE_S).start()
                produce_backlog(b.bootstrap, topic, events, b.workdir, key=key)
                ends = end_offsets(b.bootstrap, topic, b.cfg.partitions)
                watch = CommitWatch(b.bootstrap, topic, ends)
                deadline = time.monotonic() + 120 + events / 500
                while not watch.complete(group):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"fleet {key} x{count} did not finish")
                    time.sleep(0.2)
                per_worker = [_usage_lines(scraper.scrape(u + "/metrics")) for u in urls]
            finally:
                if scraper is not None:
                    scraper.stop()
                for p in procs:
                    p.stop()
            rows.append({"workers": count, "series": sum(per_worker), "per_worker": per_worker})
            log(f"fleet {key} x{count}: {sum(per_worker):,} usage series ({per_worker})")
        one = rows[0]["series"]
        out[key] = {"rows": rows, "ratio_3_to_1": rows[-1]["series"] / one if one else None}
    return out


# ---------------------------------------------------------------------------------------------
# The whole run


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Each partition's end offset; the topic is new, so it starts at 0 and the sum is its size."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
    try:
        ends = {}
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if low != 0:
                raise RuntimeError(f"{topic}[{p}] starts at offset {low}, not 0")
            ends[p] = high
        return ends
    finally:
        consumer.close()


def produce_backlog(
    bootstrap: str, topic: str, count: int, workdir: Path, key: str = "attributes"
) -> float:
    began = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "consumer",
            "produce",
            "--bootstrap-servers",
            bootstrap,
            "--topic",
            topic,
            "--count",
            str(count),
            "--seed",
            "0",
            "--key",
            key,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=workdir,
    )
    if done.returncode != 0:
        raise RuntimeError(f"producing the backlog failed:\n{done.stdout}\n{done.stderr}")
    return time.monotonic() - began


def run_json_module(workdir: Path, module: str, *args: str) -> dict[str, Any]:
    """`python -m <module> <args>` from the repository; its last stdout line is a JSON object."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run_decode_benchmark(workdir: Path) -> dict[str, Any]:
    """bench/decode.py: the share of the mix the fast decoder takes, and each decoder's cost."""
    return run_json_module(workdir, "bench.decode")


def run_scrape_benchmark(
    cfg: Config, workdir: Path, profile: str = "llm", *, sets: int = 0, gzip: bool = False
) -> dict[str, Any]:
    return run_json_module(
        workdir,
        "bench.scrape",
        *("--sets", str(sets or cfg.scrape_sets), "--reps", str(cfg.scrape_reps)),
        *("--profile", "full", "--metrics-profile", profile),
        *(("--gzip",) if gzip else ()),
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    began = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    quix_python = ensure_quix_venv() if "quix" in cfg.rows else QUIX_VENV / "bin" / "python"
    info = machine(quix_python) if quix_python.exists() else machine(Path(sys.executable))
    info["code"] = code_state()
    log(f"{cfg.events:,} events x {cfg.reps} reps on {info['cpu_model']} ({info['cores']} cores)")

    workdir = Path(tempfile.mkdtemp(prefix="usage-consumer-bench-"))
    (workdir / "logs").mkdir()
    data_dir = workdir / "kafka"
    data_dir.mkdir()
    phases: dict[str, float] = {}
    runs: list[dict[str, Any]] = []
    extras: dict[str, Any] = {}
    failed = False
    try:
        t = time.monotonic()
        info_broker = broker.start_broker(data_dir)
        bootstrap = info_broker.bootstrap
        topic = "bench-backlog"
        ensure_topics(bootstrap, [topic, f"{topic}.dlq"], partitions=cfg.partitions)
        phases["broker_s"] = time.monotonic() - t
        log(f"broker at {bootstrap}; producing {cfg.events:,} events to {topic}")
        phases["produce_s"] = produce_backlog(bootstrap, topic, cfg.events, workdir)
        ends = end_offsets(bootstrap, topic, cfg.partitions)
        if sum(ends.values()) != cfg.events:
            raise RuntimeError(f"backlog holds {sum(ends.values())} messages, not {cfg.events}")
        log(f"backlog ready in {phases['produce_s']:.0f} s: {ends}")
        b = Bench(
            cfg, bootstrap, topic, ends, workdir, quix_python, CommitWatch(bootstrap, topic, ends)
        )

        before = (
            [BEFORE_ROW] if cfg.before_ref and "worker" in cfg.rows and export_before(b) else []
        )
        t = time.monotonic()
        for rep in range(cfg.reps):
            # Two workers against one: only in the first scale_reps repetitions, for time.
            rows = cfg.rows + before + (["worker_x2"] if rep < cfg.scale_reps else [])
            shift = rep % len(rows) if rows else 0
            for position, row in enumerate(rows[shift:] + rows[:shift]):
                runs.append(run_row(b, row, rep, position))
        phases["rows_s"] = time.monotonic() - t
        for line in report.profile_lines(report.summarize({"runs": runs})):
            log(line)

        if cfg.fleet_events > 0:
            t = time.monotonic()
            extras["fleet"] = run_fleet(b, cfg.fleet_events)
            phases["fleet_s"] = time.monotonic() - t

        t = time.monotonic()
        extras["decode"] = run_decode_benchmark(workdir)
        phases["decode_s"] = time.monotonic() - t
        log(
            "decode: the fast path took {:.1%} of the mix, {} µs per event (the model: {})".format(
                extras["decode"]["fast_path_share"],
                extras["decode"]["fast_us_per_event"],
                extras["decode"]["model_us_per_event"],
            )
        )

        if cfg.scrape_sets > 0:
            t = time.monotonic()
            log(f"scrape benchmark: {cfg.scrape_sets:,} attribute sets, profiles llm, genai, both")
            by_profile: dict[str, Any] = {}
            for profile in SCRAPE_PROFILES:
                got = by_profile[profile] = run_scrape_benchmark(cfg, workdir, profile)
                log(
                    f"scrape {profile}: median {got['median_s']:.2f} s "
                    f"({min(got['durations_s']):.2f}-{max(got['durations_s']):.2f}), "
                    f"{got['body_bytes']:,} bytes, {got['usage_series']:,} series"
                )
            # "scrape" keeps its meaning (the llm profile) for the report and older readers.
            extras["scrape"] = by_profile["llm"]
            extras["scrape_profiles"] = by_profile
            phases["scrape_s"] = time.monotonic() - t

            # Compressed scrapes: bytes on the wire and CPU per scrape, with and without gzip,
            # at the scrape benchmark's size and at five times it (10,008 and 50,040 series).
            t = time.monotonic()
            compression = []
            for sets in (cfg.scrape_sets, 5 * cfg.scrape_sets):
                plain = run_scrape_benchmark(cfg, workdir, "llm", sets=sets)
                packed = run_scrape_benchmark(cfg, workdir, "llm", sets=sets, gzip=True)
                compression.append({"sets": sets, "identity": plain, "gzip": packed})
                log(
                    f"gzip at {plain['usage_series']:,} series: {plain['body_bytes']:,} -> "
                    f"{packed['body_bytes']:,} bytes "
                    f"({plain['body_bytes'] / packed['body_bytes']:.1f}x fewer), CPU per scrape "
                    f"{plain['median_cpu_s']:.3f} -> {packed['median_cpu_s']:.3f} s "
                    f"({packed['median_cpu_s'] / plain['median_cpu_s']:.2f}x); an expiry "
                    f"sweep {plain['median_sweep_cpu_s']:.3f} s "
                    f"({plain['median_sweep_cpu_s'] / plain['median_cpu_s']:.2f}x a scrape)"
                )
            extras["compression"] = compression
            phases["compression_s"] = time.monotonic() - t

        if cfg.latency_seconds > 0:
            t = time.monotonic()
            lat_topic = "bench-latency"
            ensure_topics(bootstrap, [lat_topic, f"{lat_topic}.dlq"], partitions=cfg.partitions)
            worker, url = b.worker(f"bench-latency-{uuid.uuid4().hex[:8]}", "latency", lat_topic)
            log(f"latency: {cfg.latency_rate:g} events/s for {cfg.latency_seconds:g} s")
            worker.spawn()
            try:
                extras["latency"] = run_latency(
                    worker,
                    url,
                    bootstrap,
                    lat_topic,
                    rate=cfg.latency_rate,
                    seconds=cfg.latency_seconds,
                    warmup=cfg.latency_warmup,
                )
            finally:
                worker.stop()
            phases["latency_s"] = time.monotonic() - t
            lat = extras["latency"]
            log(f"latency: p50 {lat['p50_s']} s, p99 {lat['p99_s']} s")
    except BaseException:
        failed = True
        log(f"failed; logs kept in {workdir / 'logs'}")
        raise
    finally:
        broker.stop_broker(data_dir)
        if not failed:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)

    info["load_average_at_end"] = os.getloadavg()
    info["code_at_end"] = code_state()
    phases["total_s"] = time.monotonic() - began
    results = {
        "schema": 1,
        "started_utc": stamp,
        "command": command_line(cfg),
        "config": asdict(cfg),
        "defaults": asdict(Config()),
        "machine": info,
        "backlog": {"events": cfg.events, "partitions": cfg.partitions, "topic": "bench-backlog"},
        "phases": phases,
        "runs": runs,
        **extras,
    }
    results["summary"] = report.summarize(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    (RESULTS / f"{stamp}.json").write_text(text)  # the newest by name is the latest
    log(f"results in bench/results/{stamp}.json ({phases['total_s'] / 60:.1f} min in all)")
    if cfg.docs:
        report.write_docs(results)
        log("docs/benchmarks.md and docs/benchmarks.png regenerated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
