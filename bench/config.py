"""The sizes of a bench run and their defaults, shared by bench.run and bench.report."""

from __future__ import annotations

from dataclasses import dataclass, field

ROWS = ("raw", "worker", "naive", "quix")
SLOW_ROWS = ("naive", "quix")


@dataclass
class Config:
    events: int = 1_000_000
    reps: int = 3
    # The naive and Quix rows record each event through the SDK (~100 us): draining 1,000,000
    # three times each would take 11 minutes alone. They drain the first `slow_events` of the
    # same backlog (every partition's first share), from fresh groups; their rate is flat
    # (7,700 events/s over 500,000 and over 1,000,000 in earlier runs here).
    slow_events: int = 250_000
    partitions: int = 12
    rows: list[str] = field(default_factory=lambda: list(ROWS))
    scale_reps: int = 1
    latency_seconds: float = 30.0
    latency_warmup: float = 5.0
    latency_rate: float = 5000.0
    # 417 attribute sets x 24 lines (7 counters, the histogram's 15 buckets + sum + count) is
    # 10,008 series in Prometheus' sense: one exposition line each.
    scrape_sets: int = 417
    scrape_reps: int = 5
    docs: bool = True
