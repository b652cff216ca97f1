"""How long one /metrics scrape takes with many series: a subprocess, so its memory is its own.

Builds the worker's registry in-process the way `consumer.app.run_worker` does (the worker's own
metrics, `build_meter_provider`, the trackers of `--metrics-profile` from
`consumer.usage.profiles.build_trackers`), records events that give `--sets` distinct attribute
sets, serves it with `consumer.web.server.MetricsServer` on a free loopback port, and times real
HTTP GETs of /metrics (request sent to body fully read). Prints one JSON object.

`--metrics-profile` is the worker's setting: llm (the seed's eight llm.* instruments, the
default), genai (the two gen_ai.client.* histograms) or both. `--gzip` asks for a gzip body, as
Prometheus does; then `body_bytes` is what crossed the wire and `text_bytes` the text it held.
`cpu_s` is this process's CPU time per scrape: the server's collect, rendering and compression
(the client here only reads the bytes). `sweep_cpu_s` is the CPU time of an idle-series expiry
sweep (`consumer.usage.expiry`) over the same registry, which finds nothing idle: the cost the
worker pays every TTL/10 with `series_idle_ttl` set, measured side by side with the scrape.

Two event mixes (`--profile`) of `--sets` events, each its own attribute set (a unique
`user_tier`):
  full       every event has all token kinds (cache writes included), a latency and status
             "error", so every instrument holds `--sets` attribute sets (the genai token
             histogram: `--sets` per token type): the worst case for that many sets;
  realistic  the synthetic mix (some token kinds and errors are rare), so the request counter
             and the duration histograms hold `--sets` sets and the other series fewer.

    python -m bench.scrape --sets 10000 --reps 5 --profile full --metrics-profile genai
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
import urllib.request

from prometheus_client import CollectorRegistry

from bench.common import peak_rss_kib
from consumer.devtools.produce import synthetic_events
from consumer.exposition.self_metrics import WorkerMetrics
from consumer.pipeline.health import HealthState
from consumer.usage.expiry import SeriesExpiry
from consumer.usage.options import UsageOptions
from consumer.usage.profiles import build_trackers, members, profile_names
from consumer.usage.provider import METER_NAME, build_meter_provider
from consumer.web.server import MetricsServer


def events(sets: int, profile: str) -> list[UsageOptions]:
    out = []
    for i, e in enumerate(synthetic_events(sets, seed=11)):
        e["user_tier"] = f"bench-{i:06d}"
        if profile == "full":
            e.update(
                status="error",
                error_code="upstream_timeout",
                input_tokens=e["input_tokens"] or 100,
                output_tokens=e["output_tokens"] or 10,
                cache_read_tokens=e.get("cache_read_tokens", e.get("cache_input_tokens", 0))
                or 1000,
                cache_write_tokens=e.get("cache_write_tokens") or 200,
                system_tokens=e["system_tokens"] or 5,
            )
        fields = {k: v for k, v in e.items() if k not in ("schema_version", "event_id")}
        fields.pop("occurred_at")
        out.append(UsageOptions(**fields))
    return out


#: The exposition-name prefix of each profile's instruments, to count its series.
SERIES_PREFIXES = {"llm": b"llm_", "genai": b"gen_ai_"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--profile", choices=["full", "realistic"], default="full")
    parser.add_argument("--metrics-profile", choices=profile_names(), default="llm")
    parser.add_argument("--gzip", action="store_true", help="send Accept-Encoding: gzip")
    args = parser.parse_args()

    registry = CollectorRegistry(auto_describe=True)
    WorkerMetrics.create(registry)
    # The worker's default limit is 10,000 sets per metric; never let this benchmark overflow.
    limit = max(10_000, args.sets)
    provider = build_meter_provider(registry, limit)
    trackers = build_trackers(args.metrics_profile, provider.get_meter(METER_NAME), limit)
    for options in events(args.sets, args.profile):
        for tracker in trackers:
            tracker.record_usage(options)

    server = MetricsServer("127.0.0.1", 0, registry, HealthState())
    server.start()
    host, port = server.address
    headers = {"Accept-Encoding": "gzip"} if args.gzip else {}
    durations, cpu, size = [], [], 0
    for _ in range(args.reps):
        request = urllib.request.Request(f"http://{host}:{port}/metrics", headers=headers)
        began, began_cpu = time.perf_counter(), time.process_time()
        with urllib.request.urlopen(request, timeout=300) as resp:  # noqa: S310 - our own URL
            body = resp.read()
            encoding = resp.headers.get("Content-Encoding", "identity")
        durations.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
        size = len(body)
    server.stop()
    expiry = SeriesExpiry(provider, 3600.0)
    expiry.sweep(0.0)  # first sight of every series
    sweeps = []
    for rep in range(args.reps):
        began_cpu = time.process_time()
        sweep = expiry.sweep(float(rep + 1))
        sweeps.append(time.process_time() - began_cpu)
        assert not sweep.expired
    assert encoding == ("gzip" if args.gzip else "identity"), encoding
    if args.gzip:
        body = gzip.decompress(body)
    lines = body.count(b"\n")
    # Comment lines start with "#", so a prefix match counts samples only.
    by_profile = {
        name: sum(1 for line in body.splitlines() if line.startswith(SERIES_PREFIXES[name]))
        for name in members(args.metrics_profile)
    }
    print(
        json.dumps(
            {
                "profile": args.profile,
                "metrics_profile": args.metrics_profile,
                "sets": args.sets,
                "reps": args.reps,
                "durations_s": durations,
                "median_s": statistics.median(durations),
                "gzip": args.gzip,
                "body_bytes": size,
                "text_bytes": len(body),
                "cpu_s": cpu,
                "median_cpu_s": statistics.median(cpu),
                "sweep_cpu_s": sweeps,
                "median_sweep_cpu_s": statistics.median(sweeps),
                "lines": lines,
                "usage_series": sum(by_profile.values()),
                "usage_series_by_profile": by_profile,
                "peak_rss_mib": peak_rss_kib() / 1024,
            }
        )
    )
    provider.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
