"""The sizes of a bench run and their defaults, shared by bench.run and bench.report."""

from __future__ import annotations

from dataclasses import dataclass, field

ROWS = ("raw", "worker", "worker_genai", "worker_both", "naive", "quix")
#: The row of `--before-ref REF`: the worker as it was at a git ref, beside today's.
BEFORE_ROW = "worker_before"
SLOW_ROWS = ("naive", "quix")
#: The worker rows and the metrics profile each runs with (`--metrics-profile`). `worker` runs as
#: shipped, without the flag: the default profile, llm. `worker_x2` is two `worker`s.
WORKER_PROFILES = {"worker": "llm", "worker_genai": "genai", "worker_both": "both"}
#: The profiles the scrape benchmark is run for (bench/scrape.py --metrics-profile).
SCRAPE_PROFILES = ("llm", "genai", "both")
#: The targets for CPU per event of a profile's worker row over the llm one's (`worker`), per
#: repetition: met when the median ratio is at most this.
CPU_TARGETS = {"genai": 1.3, "both": 2.0}


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
    # 10,008 series in Prometheus' sense: one exposition line each. The same sets in the genai
    # profile are 92 lines each (5 token types x 15 of the token histogram, 17 of the duration
    # one): 38,364; in both, 116 each: 48,372.
    scrape_sets: int = 417
    # The fleet section: each key choice drains this many events with 1, 2 and 3 workers.
    fleet_events: int = 100_000
    scrape_reps: int = 5
    docs: bool = True
    # A git ref whose worker runs as one more row (worker_before), beside today's: a change's
    # cost measured side by side in one run. Empty: no such row.
    before_ref: str = ""
