"""The sizes of a bench run and their defaults, shared by bench.run and bench.report."""

from __future__ import annotations

from dataclasses import dataclass, field

ROWS = ("raw", "worker", "naive", "quix")


@dataclass
class Config:
    # 1,000,000 x 3 took 16 minutes on the 2-core machine (the naive and Quix rows record each
    # event through the SDK, ~110 us); 600,000 x 3 stays under 15 even with other work running.
    events: int = 600_000
    reps: int = 3
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
