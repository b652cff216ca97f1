"""What the measured subprocesses share with the orchestrator. Standard library only: the Quix
Streams peer imports this from its own venv.

A subprocess reports progress as JSON lines on stdout, each stamped with `time.time()` (the
orchestrator runs on the same machine, so the clocks agree):

    {"event": "start", "t": ...}    partitions assigned, or the first message in hand
    {"event": "done", "t": ...}     raw consume only: the whole backlog has been read
    {"event": "stopped", "t": ..., "count": n}    after SIGTERM, how many events it handled
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


def stop_on_sigterm() -> threading.Event:
    """An event set by SIGTERM/SIGINT, for loops that check it between batches."""
    stop = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


@dataclass(frozen=True)
class ProcSample:
    """CPU seconds (user + system, all threads) and peak RSS of a live process, from /proc."""

    cpu_s: float
    hwm_kib: int


def sample_proc(pid: int) -> ProcSample | None:
    """None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            status = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    # Fields from there on start at field 3; utime and stime are fields 14 and 15.
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    hwm = 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return ProcSample(cpu, hwm)


def peak_rss_kib() -> int:
    sample = sample_proc(os.getpid())
    return sample.hwm_kib if sample else 0
