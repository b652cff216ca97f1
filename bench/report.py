"""Tables and a chart from a bench result: docs/benchmarks.md and docs/benchmarks.png.

    .venv/bin/python -m bench.report [bench/results/<file>.json] [--doc PATH] [--chart PATH]

(default: the newest result, into docs/benchmarks.md and docs/benchmarks.png). `bench.run` calls
this at the end of every run. The "Where the time goes" section of an existing document (of
docs/benchmarks.md when `--doc` names a new file) is carried over unchanged (it is written by
hand from profiles), so regenerating the numbers never loses it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.config import CPU_TARGETS, SCRAPE_PROFILES, WORKER_PROFILES

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
CHART = REPO / "docs" / "benchmarks.png"
RESULTS = REPO / "bench" / "results"


def latest() -> Path:
    """The newest result: files are named by their UTC start time, so the last by name."""
    found = sorted(RESULTS.glob("*.json"))
    if not found:
        raise SystemExit(f"no results in {RESULTS}: run `make bench` first")
    return found[-1]


LABELS = {
    "raw": "1. raw consume (floor)",
    "worker": "2. worker as shipped",
    "worker_genai": "worker, metrics profile genai",
    "worker_both": "worker, metrics profile both",
    "naive": "3. naive path",
    "quix": "4. Quix Streams peer",
    "worker_x2": "worker x2 (one group)",
    "worker_before": "worker at --before-ref",
}
SHORT = {
    "raw": "raw consume\n(floor)",
    "worker": "worker\nas shipped",
    "naive": "naive path",
    "quix": "Quix Streams\npeer",
}
METRICS = ("events_per_s", "cpu_s_per_million", "peak_rss_mib", "startup_s", "machine_busy")
RATIOS = (
    ("worker", "raw"),
    ("worker", "naive"),
    ("worker", "quix"),
    ("worker_x2", "worker"),
    ("worker_genai", "worker"),
    ("worker_both", "worker"),
    ("worker", "worker_before"),
)
PROFILE_ROWS = {profile: row for row, profile in WORKER_PROFILES.items()}
DASH = "\u2013"  # an en dash, for ranges in the tables
WHERE_START = "<!-- where-the-time-goes: kept by bench/report.py, edit freely -->"
WHERE_END = "<!-- /where-the-time-goes -->"
WHERE_PLACEHOLDER = """\
_Placeholder, to be filled in from py-spy profiles of the rows above (for example
`py-spy record -o worker.svg -- .venv/bin/python -m consumer run ...` during a run): the share of
the worker's time in validation, recording (SDK calls), scrapes and Kafka, and the same for the
naive path and the Quix Streams peer._"""


def spread(values: Iterable[float]) -> dict[str, float] | None:
    vs = [v for v in values if v is not None]
    if not vs:
        return None
    return {"min": min(vs), "median": statistics.median(vs), "max": max(vs), "n": len(vs)}


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """min/median/max per row and metric, and per-repetition ratios between rows."""
    runs = results["runs"]
    rows: dict[str, Any] = {}
    for row in LABELS:
        mine = [r for r in runs if r["row"] == row]
        if mine:
            rows[row] = {m: spread(r[m] for r in mine) for m in METRICS}
    ratios: dict[str, Any] = {}
    reps = sorted({r["rep"] for r in runs})
    for a, b in RATIOS:
        speed, cpu = [], []
        for rep in reps:
            ra = [r for r in runs if r["rep"] == rep and r["row"] == a]
            rb = [r for r in runs if r["rep"] == rep and r["row"] == b]
            if ra and rb:
                speed.append(ra[0]["events_per_s"] / rb[0]["events_per_s"])
                cpu.append(ra[0]["cpu_s_per_million"] / rb[0]["cpu_s_per_million"])
        if speed:
            ratios[f"{a}/{b}"] = {"events_per_s": spread(speed), "cpu_s_per_million": spread(cpu)}
    summary = {"rows": rows, "ratios": ratios}
    profiles = summarize_profiles(results, summary)
    if profiles:
        summary["profiles"] = profiles
    return summary


def summarize_profiles(results: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Per metrics profile: its worker row, CPU per event over the llm row's (per repetition)
    against its target, the scrapes during its drain, and its scrape benchmark."""
    runs = results["runs"]
    scrapes = results.get("scrape_profiles") or {}
    out: dict[str, Any] = {}
    for profile in SCRAPE_PROFILES:
        row = PROFILE_ROWS[profile]
        stats = summary["rows"].get(row)
        scrape = scrapes.get(profile)
        if stats is None and scrape is None:
            continue
        entry: dict[str, Any] = {"row": row}
        if stats is not None:
            entry.update(
                {m: stats[m] for m in ("events_per_s", "cpu_s_per_million", "peak_rss_mib")}
            )
            drained = [r["scrapes"] for r in runs if r["row"] == row and "scrapes" in r]
            entry["drain_scrape_median_s"] = spread(d["median_s"] for d in drained)
            entry["drain_scrape_bytes"] = spread(d["median_bytes"] for d in drained)
        ratio = summary["ratios"].get(f"{row}/worker")
        if ratio is not None:
            cpu = ratio["cpu_s_per_million"]
            target = CPU_TARGETS.get(profile)
            entry["cpu_ratio_to_llm"] = cpu
            entry["events_per_s_ratio_to_llm"] = ratio["events_per_s"]
            if target is not None:
                entry["cpu_target"] = target
                entry["target_met"] = cpu["median"] <= target  # the median repetition
                entry["target_met_every_rep"] = cpu["max"] <= target
        if scrape is not None:
            durations = scrape["durations_s"]
            entry["scrape"] = {
                "sets": scrape["sets"],
                "median_s": scrape["median_s"],
                "min_s": min(durations),
                "max_s": max(durations),
                "reps": len(durations),
                "body_bytes": scrape["body_bytes"],
                "lines": scrape["lines"],
                "usage_series": scrape["usage_series"],
                "peak_rss_mib": scrape["peak_rss_mib"],
            }
        out[profile] = entry
    return out


def target_verdict(entry: dict[str, Any], markdown: bool = True) -> str:
    target = entry.get("cpu_target")
    if target is None or "target_met" not in entry:
        return "-"
    le = "≤" if markdown else "<="
    if not entry["target_met"]:
        verdict = "**not met**" if markdown else "NOT met"
    elif entry["target_met_every_rep"]:
        verdict = "met"
    else:
        verdict = "met by the median, not in every repetition"
    return f"{le} {target:g}: {verdict}"


def profile_lines(summary: dict[str, Any]) -> list[str]:
    """One log line per metrics profile with a worker row (bench.run prints them)."""
    lines = []
    for profile, e in summary.get("profiles", {}).items():
        if "events_per_s" not in e:
            continue
        line = (
            f"profile {profile} ({e['row']}): {fmt(e['events_per_s'])} events/s, "
            f"{fmt(e['cpu_s_per_million'], '{:,.1f}')} CPU s/M"
        )
        if "cpu_ratio_to_llm" in e:
            line += (
                f"; CPU per event / llm {fmt(e['cpu_ratio_to_llm'], '{:.2f}')}, "
                f"target {target_verdict(e, markdown=False)}"
            )
        lines.append(line.replace(DASH, "-"))
    return lines


# ---------------------------------------------------------------------------------------------
# Formatting


def fmt(s: dict[str, float] | None, pattern: str = "{:,.0f}", scale: float = 1.0) -> str:
    if s is None:
        return "-"
    med, lo, hi = (pattern.format(s[k] * scale) for k in ("median", "min", "max"))
    return med if s["n"] == 1 else f"{med} ({lo}{DASH}{hi})"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def chart(summary: dict[str, Any], path: Path) -> bool:
    """Throughput and peak RSS per row, medians with min-max bars. False without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415 (optional: only the bench extras have it)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    rows = [r for r in ("raw", "worker", "naive", "quix") if r in summary["rows"]]
    if not rows:
        return False
    names = [SHORT[r] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    # Raw consume is two orders of magnitude above the rest: a log scale keeps all four legible.
    for ax, metric, title, unit, log in (
        (axes[0], "events_per_s", "Throughput draining the backlog", "events/s (log scale)", True),
        (axes[1], "peak_rss_mib", "Peak RSS", "MiB", False),
    ):
        stats = [summary["rows"][r][metric] for r in rows]
        medians = [s["median"] for s in stats]
        errors = [
            [s["median"] - s["min"] for s in stats],
            [s["max"] - s["median"] for s in stats],
        ]
        colors = ["#9e9e9e", "#1f77b4", "#ff7f0e", "#2ca02c"][: len(rows)]
        bars = ax.bar(names, medians, yerr=errors, capsize=4, color=colors)
        ax.bar_label(bars, labels=[f"{m:,.0f}" for m in medians], padding=3, fontsize=9)
        ax.set_title(title)
        ax.set_ylabel(unit)
        if log:
            ax.set_yscale("log")
            ax.set_ylim(min(s["min"] for s in stats) / 3, max(s["max"] for s in stats) * 4)
        else:
            ax.margins(y=0.15)
        ax.tick_params(axis="x", labelsize=9)
    fig.suptitle(f"median of repetitions, bars show min{DASH}max", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def kept_where_section(doc: Path) -> str:
    if doc.exists():
        text = doc.read_text()
        if WHERE_START in text and WHERE_END in text:
            return text.split(WHERE_START, 1)[1].split(WHERE_END, 1)[0].strip("\n")
    return WHERE_PLACEHOLDER


def scrape_interval(results: dict[str, Any]) -> float:
    """The worker rows' scrape interval (runs before it was recorded used 1 s)."""
    for r in results["runs"]:
        if "scrapes" in r:
            return float(r["scrapes"].get("interval_s", 1.0))
    return 1.0


def scrape_note(results: dict[str, Any]) -> str:
    scrapes = [r["scrapes"] for r in results["runs"] if r["row"] == "worker" and "scrapes" in r]
    if not scrapes:
        return ""
    med = spread(s["median_s"] for s in scrapes)
    size = spread(s["median_bytes"] for s in scrapes)
    share = spread(s.get("busy_share") for s in scrapes)
    text = f": one scrape took a median {fmt(med, '{:.2f}')} s for {fmt(size, '{:,.0f}', 1e-6)} MB"
    if share:
        text += f", and a scrape was in progress {fmt(share, '{:.0%}')} of the window"
    return text


def render(
    results: dict[str, Any], where: str, has_chart: bool, chart_link: str = CHART.name
) -> str:
    summary = results.get("summary") or summarize(results)
    m = results["machine"]
    cfg = results["config"]
    libs, qlibs = m["libraries"], m["libraries_quix_venv"]
    n = results["backlog"]["events"]
    reps = cfg["reps"]
    busy = spread(r["machine_busy"] for r in results["runs"])
    out: list[str] = []
    add = out.append

    add("# Benchmarks\n")
    add(
        "_Generated by `bench/report.py` from "
        f"`bench/results/{results['started_utc']}.json` "
        "(UTC start time); edit only the section "
        '"Where the time goes", which regeneration keeps._\n'
    )
    add(
        f"Each row drains the same backlog of **{n:,} realistic usage events** "
        f"({results['backlog']['partitions']} partitions, `synthetic_events`' mix of about "
        "1,800 attribute sets) on a local single-node Kafka "
        f"{m['kafka']} broker, from a fresh consumer group, as a subprocess of its own; "
        f"**{reps} repetition{'s' if reps != 1 else ''}**, the order of the rows rotated "
        "each time. Figures are the "
        f"median, with (min{DASH}max) over the repetitions.\n"
    )
    code, code_end = m.get("code"), m.get("code_at_end")
    if code:
        changes = code["uncommitted"]
        add(
            f"Measured code: commit `{code['commit'][:10]}`"
            + (f", with uncommitted changes ({'; '.join(changes)})" if changes else "")
            + ".\n"
        )
    if code and code_end and code["sources_sha256"] != code_end["sources_sha256"]:
        add(
            "**Warning: `consumer/` or `schemas/` changed during this run** (commit "
            f"`{code_end['commit'][:10]}` at the end): rows started after the change measured "
            "the new code. Rerun for figures of one version.\n"
        )
    add("## Reproduce\n")
    add(f"```sh\n{results['command']}\n```\n")
    d = results.get("defaults", cfg)
    ph = results["phases"]
    add(
        f"`make bench` alone uses the defaults ({d['events']:,} events, {d['reps']} "
        "repetitions); `BENCH_EVENTS`, `BENCH_REPS` and the other `BENCH_*` variables (or the "
        "flags of `.venv/bin/python -m bench.run --help`) change the sizes. "
        f"This run took {ph['total_s'] / 60:.1f} minutes in all "
        f"({ph.get('produce_s', 0) / 60:.1f} producing the backlog, "
        f"{ph.get('rows_s', 0) / 60:.1f} draining it).\n"
    )
    slow = cfg.get("slow_events", n)
    if slow < n:
        add(
            f"The naive and Quix rows record every event through the SDK (about 100 µs each), "
            f"so they drain the first **{slow:,}** events of the same backlog (each partition's "
            "first share, in proportion), each from a fresh group: draining all of it three "
            "times over would take them about 11 minutes alone. Their rate does not depend on "
            "how much they drain (the naive path ran at 7,700 events/s over 500,000 and over "
            "1,000,000 events in earlier runs on this machine); their events/s and CPU per "
            "million are over what they drained.\n"
        )
    if results["runs"] and ph.get("rows_s") and (n, reps) != (d["events"], d["reps"]):
        # Producing and draining scale with events (draining also with repetitions); the
        # broker, scrape and latency phases do not.
        fixed = ph["total_s"] - ph["rows_s"] - ph.get("produce_s", 0)
        full = fixed + (ph.get("produce_s", 0) + ph["rows_s"] * d["reps"] / reps) * d["events"] / n
        add(
            f"From this run's timings, a run with the defaults would take about "
            f"{full / 60:.0f} minutes on this machine.\n"
        )

    add("## Throughput, CPU and memory\n")
    body = []
    for row in ("raw", "worker", "naive", "quix"):
        s = summary["rows"].get(row)
        if s is None:
            continue
        body.append(
            [
                LABELS[row],
                fmt(s["events_per_s"]),
                fmt(s["cpu_s_per_million"], "{:,.1f}"),
                fmt(s["peak_rss_mib"]),
                fmt(s["startup_s"], "{:.1f}"),
            ]
        )
    add(
        table(
            ["row", "events/s", "CPU s per 1M events", "peak RSS MiB", "start-up s"],
            body,
        )
        + "\n"
    )
    ratio_rows = []
    before_ref = cfg.get("before_ref") or "?"
    for key, label in (
        ("worker/raw", "worker ÷ raw consume"),
        ("worker/naive", "worker ÷ naive path"),
        ("worker/quix", "worker ÷ Quix Streams"),
        ("worker/worker_before", f"worker ÷ worker at {before_ref}"),
    ):
        r = summary["ratios"].get(key)
        if r:
            ratio_rows.append(
                [
                    label,
                    fmt(r["events_per_s"], "{:.3g}"),
                    fmt(r["cpu_s_per_million"], "{:.3g}"),
                ]
            )
    if ratio_rows:
        add("Ratios, computed per repetition (rows of one repetition ran back to back):\n")
        add(table(["ratio", "events/s", "CPU s per 1M events"], ratio_rows) + "\n")
    if has_chart:
        add(f"![throughput and peak RSS of the four rows]({chart_link})\n")

    add("How to read it:\n")
    add(
        "- **events/s** is the events drained divided by the measured window. The window opens "
        "when the process has partitions (the worker: `/readyz` turns 200) or its first "
        "message (raw, naive, Quix), and closes when the group's committed offsets, polled "
        "from the broker every 100 ms, reach the end of every partition (for the naive and "
        "Quix rows: of their share) (raw consume commits nothing: "
        "it closes when it has read the whole backlog). **start-up s** is spawn to window "
        "start (interpreter, imports, group join), left out of the window.\n"
        "- **CPU s per 1M events** is the process's user+system CPU time (all threads, from "
        "/proc) over the window, per million events; **peak RSS** is its VmHWM at the end.\n"
        "- The worker runs as shipped (`python -m consumer run`, scrape commit mode, defaults) "
        f"and a scraper GETs its /metrics every {scrape_interval(results):g} s, so its "
        "commits can advance (its window closes on the commit that follows the first scrape "
        "after the last event, so it includes up to one interval of waiting); its "
        f"figures include serving those scrapes{scrape_note(results)}. The naive path and "
        "the peer are not scraped.\n"
        "- The naive path decodes each message with `consumer.pipeline.validate.decode`, records "
        "it with `TokenTracker.record_usage` (a MeterProvider from "
        "`consumer.usage.provider.build_meter_provider`) and commits synchronously after each "
        "batch of 1,000.\n"
        '- The Quix Streams peer is an `Application` with `value_deserializer="json"` and '
        "`sdf.update()` calling `TokenTracker.record_usage`: it parses JSON but does not "
        "validate the schema (less work than rows 2 and 3). It commits every second "
        "(`commit_interval=1.0`, default 5 s) so its commits trail processing no more than "
        "the worker's, and reads from `earliest`.\n"
        f"- The machine is shared: all cores were {fmt(busy, '{:.0%}')} busy on average "
        "during the windows (the broker and the scraper included, other people's work "
        "too). Each run's figure is in the JSON (`machine_busy`).\n"
    )

    profiles = summary.get("profiles")
    if profiles and set(profiles) - {"llm"}:  # something to compare the llm profile with
        render_profiles(results, profiles, add)

    add("## Machine\n")
    mrows = [
        ["CPU", f"{m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB"],
        ["OS kernel", m["kernel"]],
        ["Python", m["python"]],
        ["Java (broker)", m["java"]],
        ["Kafka broker", m["kafka"]],
        [
            "confluent-kafka (librdkafka)",
            f"{libs.get('confluent-kafka')} ({libs.get('librdkafka')}); Quix venv: "
            f"{qlibs.get('confluent-kafka')} ({qlibs.get('librdkafka')})",
        ],
        [
            "opentelemetry-sdk / exporter-prometheus",
            f"{libs.get('opentelemetry-sdk')} / {libs.get('opentelemetry-exporter-prometheus')}"
            " (both venvs)",
        ],
        [
            "pydantic",
            f"{libs.get('pydantic')}; Quix venv: {qlibs.get('pydantic')}",
        ],
        ["prometheus-client", str(libs.get("prometheus-client"))],
        ["quixstreams", str(qlibs.get("quixstreams"))],
        [
            "load average at start / end",
            " / ".join(
                ", ".join(f"{v:.2f}" for v in m.get(k, []))
                for k in ("load_average_at_start", "load_average_at_end")
            ),
        ],
    ]
    add(table(["", ""], mrows) + "\n")
    add(
        "Quix Streams 3.28 requires confluent-kafka < 2.13 and pydantic < 2.14, older than the "
        "project's, so the peer runs from its own venv (`bench/.venv-quix`, built from "
        "`bench/requirements-quix.txt` on the first `make bench`) with the same OpenTelemetry "
        "SDK and exporter versions and this repository on `PYTHONPATH`.\n"
    )

    scrape = results.get("scrape")
    if scrape:
        add(f"## One /metrics scrape with {scrape['usage_series']:,} series\n")
        add(
            f"A registry built as the worker builds it, holding **{scrape['sets']:,} attribute "
            "sets on each of the 8 instruments** of the llm profile (every set has all token "
            "kinds, a latency and status `error`: the worst case for that many sets), served by "
            "`consumer.web.server.MetricsServer`; time of a real HTTP GET of /metrics, request to "
            f"last byte, median of {scrape['reps']}"
            + (
                "; the same for the other metrics profiles is under Metrics profiles.\n"
                if results.get("scrape_profiles")
                else ".\n"
            )
        )
        add(
            table(
                ["median", f"min{DASH}max", "series (lines)", "body", "process peak RSS"],
                [
                    [
                        f"{scrape['median_s']:.2f} s",
                        f"{min(scrape['durations_s']):.2f}{DASH}{max(scrape['durations_s']):.2f} s",
                        f"{scrape['usage_series']:,}",
                        f"{scrape['body_bytes'] / 1e6:.0f} MB",
                        f"{scrape['peak_rss_mib']:,.0f} MiB",
                    ]
                ],
            )
            + "\n"
        )

    compression = results.get("compression")
    if compression:
        add("## Compressed scrapes\n")
        add(
            "`bench/scrape.py --gzip`: the scrape benchmark's registry (llm profile, every set "
            "with all token kinds) at two sizes, GET /metrics with and without "
            "`Accept-Encoding: gzip` (Prometheus always sends it). Bytes are what crossed the "
            "wire; CPU is the serving process's per scrape (collect, render, compress), median "
            f"of {compression[0]['identity']['reps']}. Targets: at least 8x fewer bytes, CPU "
            "within 1.5x.\n"
        )
        crow = []
        for c in compression:
            plain, packed = c["identity"], c["gzip"]
            fewer = plain["body_bytes"] / packed["body_bytes"]
            slower = packed["median_cpu_s"] / plain["median_cpu_s"]
            crow.append(
                [
                    f"{plain['usage_series']:,}",
                    f"{plain['body_bytes'] / 1e6:.1f} MB",
                    f"{packed['body_bytes'] / 1e6:.2f} MB",
                    f"{fewer:.1f}x" + (" (met)" if fewer >= 8 else " (**not met**)"),
                    f"{plain['median_cpu_s']:.3f} s",
                    f"{packed['median_cpu_s']:.3f} s",
                    f"{slower:.2f}x" + (" (met)" if slower <= 1.5 else " (**not met**)"),
                ]
            )
        add(
            table(
                [
                    "series",
                    "identity",
                    "gzip",
                    "fewer bytes",
                    "CPU identity",
                    "CPU gzip",
                    "CPU ratio",
                ],
                crow,
            )
            + "\n"
        )

    if compression and "median_sweep_cpu_s" in compression[0]["identity"]:
        add("## Idle-series expiry: a sweep against a scrape\n")
        add(
            "`bench/scrape.py`, the same registries: CPU of one `series_idle_ttl` sweep (every "
            "series looked at, none idle), median of the same repetitions, next to one "
            "uncompressed scrape of that registry. A sweep runs every TTL/10, at most once a "
            "minute; a scrape every scrape interval.\n"
        )
        srow = []
        for c in compression:
            plain = c["identity"]
            srow.append(
                [
                    f"{plain['usage_series']:,}",
                    f"{plain['median_sweep_cpu_s'] * 1000:.1f} ms",
                    f"{plain['median_cpu_s'] * 1000:.0f} ms",
                    f"{plain['median_sweep_cpu_s'] / plain['median_cpu_s']:.2f}x",
                ]
            )
        add(table(["series", "sweep CPU", "scrape CPU", "sweep / scrape"], srow) + "\n")

    decoding = results.get("decode")
    if decoding:
        add("## Decoding: the fast path\n")
        add(
            f"`python -m bench.decode`: {decoding['events']:,} events of the backlog's mix (every "
            "field of the current schema, a quarter of the cache reads under the seed's name "
            "`cache_input_tokens`), CPU per event, best of three passes. The worker decodes with "
            "`decode_fast` (msgspec, derived from the model); what it does not take goes to the "
            "model, which stays the authority on what is valid.\n"
        )
        add(
            table(
                ["fast path takes", "fast path, µs per event", "model, µs per event"],
                [
                    [
                        f"{decoding['fast_path_share']:.1%}",
                        f"{decoding['fast_us_per_event']:.2f}",
                        f"{decoding['model_us_per_event']:.2f}",
                    ]
                ],
            )
            + "\n"
        )

    lat = results.get("latency")
    if lat and lat.get("p50_s") is not None:
        add("## End-to-end latency at a steady rate\n")
        add(
            table(
                ["rate", "p50", "p99", "max", "samples", "missing", "scrape (median)"],
                [
                    [
                        f"{lat['rate_achieved']:,.0f} events/s",
                        f"{lat['p50_s'] * 1000:,.0f} ms",
                        f"{lat['p99_s'] * 1000:,.0f} ms",
                        f"{lat['max_s'] * 1000:,.0f} ms",
                        str(lat["samples"]),
                        str(lat["missing"]),
                        f"{lat['scrape_median_s'] * 1000:,.0f} ms",
                    ]
                ],
            )
            + "\n"
        )
        add(
            "Method: a fresh worker (as shipped) consumes a fresh topic while the producer "
            f"publishes {lat['rate_target']:,.0f} events/s in {lat['tick_s'] * 1000:.0f} ms "
            "ticks of realistic events. The last event of each tick is a marker: one fixed "
            "attribute set whose `scenario` is `bench-marker-<k>`, k = tick mod 50 (so only 50 "
            "extra attribute sets exist). A scraper GETs /metrics every "
            f"{lat['scrape_every_s'] * 1000:.0f} ms (or right after the previous scrape when "
            "one takes longer) and sums `llm_request_count_total` per marker; a tick's latency "
            "is the time its marker's count was first seen (response fully read) minus the time "
            "the marker was handed to the producer. It includes the producer's 20 ms linger and "
            "acks=all write, the fetch, the worker's batching (1,000 messages or 200 ms), "
            "recording, and waiting for and serving the next scrape: the median scrape took "
            f"{lat['scrape_median_s'] * 1000:,.0f} ms, which is the measurement's resolution. "
            f"The first {lat['warmup_s']:.0f} s of {lat['seconds']:.0f} are left out.\n"
        )

    x2 = summary["rows"].get("worker_x2")
    one = summary["rows"].get("worker")
    if x2 and one:
        r = summary["ratios"].get("worker_x2/worker")
        add("## Two workers against one\n")
        add(
            table(
                ["", "events/s", "CPU s per 1M events", "peak RSS MiB per process"],
                [
                    [
                        "1 worker",
                        fmt(one["events_per_s"]),
                        fmt(one["cpu_s_per_million"], "{:,.1f}"),
                        fmt(one["peak_rss_mib"]),
                    ],
                    [
                        "2 workers, one group",
                        fmt(x2["events_per_s"]),
                        fmt(x2["cpu_s_per_million"], "{:,.1f}"),
                        fmt(x2["peak_rss_mib"]),
                    ],
                    [
                        "2 ÷ 1",
                        fmt(r["events_per_s"], "{:.2f}") if r else "-",
                        fmt(r["cpu_s_per_million"], "{:.2f}") if r else "-",
                        "",
                    ],
                ],
            )
            + "\n"
        )
        add(
            f"The same {results['backlog']['partitions']}-partition backlog, two worker "
            "processes started together in one consumer group (cooperative-sticky), each "
            f"scraped every {scrape_interval(results):g} s; the window opens when the first "
            "has partitions. CPU is the "
            "sum of both; the 2 ÷ 1 ratios compare runs of the same repetition. The backlog is "
            "keyed by attribute set (`usage-consumer produce`'s default), so each worker holds "
            "the attribute sets of its own partitions only. On a "
            f"{m['cores']}-core machine that also runs the broker, a second worker can add at "
            "most one core's worth.\n"
        )

    fleet = results.get("fleet")
    if fleet:
        add("## The fleet: series across the workers of a group\n")
        add(
            f"{fleet['events']:,} synthetic events on a fresh {fleet['partitions']}-partition "
            "topic, produced once 1, 2 or 3 workers of one fresh group all had partitions, "
            "keyed by attribute set or by event id (`usage-consumer produce --key`); once "
            "committed to the end, the usage series (`llm_` lines) of every worker's exposition "
            "are summed. Target with attribute keys: 3 workers hold at most 1.2x the series of "
            "one.\n"
        )
        frows = []
        for key in ("attributes", "event-id"):
            entry = fleet.get(key)
            if not entry:
                continue
            series = {r["workers"]: r for r in entry["rows"]}
            ratio = entry["ratio_3_to_1"]
            verdict = ""
            if key == "attributes" and ratio is not None:
                verdict = " (met)" if ratio <= 1.2 else " (**not met**)"
            cells = []
            for n in (1, 2, 3):
                row = series.get(n)
                each = " + ".join(f"{s:,}" for s in row["per_worker"]) if row else ""
                cells.append(f"{row['series']:,} ({each})" if row else "-")
            ratio_text = f"{ratio:.2f}x" if ratio is not None else "-"
            frows.append([f"`{key}`", *cells, ratio_text + verdict])
        add(table(["key", "1 worker", "2 workers", "3 workers", "3 ÷ 1"], frows) + "\n")

    add("## Where the time goes\n")
    add(WHERE_START)
    add(where)
    add(WHERE_END + "\n")
    return "\n".join(out)


def render_profiles(results: dict[str, Any], profiles: dict[str, Any], add: Any) -> None:
    """The "Metrics profiles" section: each profile's worker row and scrape benchmark."""
    add("## Metrics profiles\n")
    body = []
    for profile, e in profiles.items():
        sc = e.get("scrape")
        ratio = e.get("cpu_ratio_to_llm")
        body.append(
            [
                f"`{profile}`",
                f"`{e['row']}`" if "events_per_s" in e else "-",
                fmt(e.get("events_per_s")),
                fmt(e.get("cpu_s_per_million"), "{:,.1f}"),
                "1 (reference)"
                if profile == "llm" and "events_per_s" in e
                else fmt(ratio, "{:.2f}"),
                target_verdict(e),
                (
                    f"{sc['median_s']:.2f} s ({sc['min_s']:.2f}{DASH}{sc['max_s']:.2f})"
                    if sc
                    else "-"
                ),
                f"{sc['body_bytes']:,} bytes, {sc['usage_series']:,} series" if sc else "-",
            ]
        )
    sets = next((e["scrape"]["sets"] for e in profiles.values() if "scrape" in e), None)
    add(
        table(
            [
                "profile",
                "row",
                "events/s",
                "CPU s per 1M events",
                "CPU per event ÷ llm",
                "target",
                f"scrape, {sets:,} sets: median (min{DASH}max)" if sets else "scrape",
                "scrape size",
            ],
            body,
        )
        + "\n"
    )
    add(
        "The worker's `metrics_profile` setting decides which instruments the events become: "
        "`llm` (the seed's eight `llm.*` instruments, the default), `genai` (the OpenTelemetry "
        "GenAI client histograms `gen_ai.client.token.usage`, one value per token type per "
        "event, and `gen_ai.client.operation.duration`) or `both`.\n"
    )
    drained = [
        f"`{p}` {fmt(e['drain_scrape_median_s'], '{:.2f}')} s for "
        f"{fmt(e['drain_scrape_bytes'], '{:,.1f}', 1e-6)} MB"
        for p, e in profiles.items()
        if e.get("drain_scrape_median_s")
    ]
    add(
        "- **events/s** and **CPU s per 1M events**: the worker rows drain the same backlog the "
        "same way (`python -m consumer run`, scraped every "
        f"{scrape_interval(results):g} s); `worker` runs as shipped (llm), `worker_genai` and "
        "`worker_both` add `--metrics-profile genai` or `--metrics-profile both`. They are in "
        "each repetition's rotation with the other rows.\n"
        "- **CPU per event ÷ llm** is the row's CPU s per 1M events over the `worker` row's "
        "of the same repetition (median, with min"
        f"{DASH}max over the repetitions); the **target** is met when the median is at most "
        "it. It includes serving the scrapes, whose size grows with the profile"
        + (f": during the drains one scrape took a median {'; '.join(drained)}" if drained else "")
        + ".\n"
        "- **scrape**: `bench/scrape.py --metrics-profile <profile>`, the registry of the "
        "section below with the same attribute sets (all token kinds, cache writes included, a "
        "latency and status `error`), for each profile: a real HTTP GET of /metrics, request to "
        "last byte. **scrape size** is the body and its usage series (exposition lines of the "
        "profile's instruments): per attribute set 24 for llm, 92 for genai (5 token types "
        "times the token histogram's 15 lines, and the duration histogram's 17) and 116 for "
        "both.\n"
    )


def write_docs(results: dict[str, Any], doc: Path = DOC, chart_path: Path = CHART) -> None:
    """Write the document and its chart; the hand-written section comes from `doc` if it has
    one, else from docs/benchmarks.md (so a copy elsewhere keeps it too)."""
    summary = results.get("summary") or summarize(results)
    has_chart = chart(summary, chart_path)
    where = kept_where_section(doc if doc.exists() else DOC)
    link = Path(os.path.relpath(chart_path.resolve(), doc.resolve().parent)).as_posix()
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render(results, where, has_chart, link))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n")[0])
    p.add_argument(
        "results", nargs="?", type=Path, default=None, help="a bench result JSON (the newest)"
    )
    p.add_argument("--doc", type=Path, default=DOC, help="the Markdown to write")
    p.add_argument("--chart", type=Path, default=CHART, help="the PNG chart to write")
    a = p.parse_args(argv)
    path = a.results or latest()
    results = json.loads(path.read_text())
    results["summary"] = summarize(results)
    write_docs(results, a.doc, a.chart)
    print(f"wrote {a.doc} and {a.chart} from {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
