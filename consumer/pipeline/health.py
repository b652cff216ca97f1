"""Liveness and readiness: what the loop reports and `/healthz` and `/readyz` answer.

The worker loop beats and sets the conditions that hold it back; the HTTP threads read them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["HealthState"]


@dataclass
class HealthState:
    """What /healthz and /readyz report; written by the worker loop, read by HTTP threads."""

    stall_after_s: float = 120.0
    heartbeat: float = field(default_factory=time.monotonic)
    assigned: int = 0
    not_ready: dict[str, str] = field(default_factory=dict)

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def alive(self) -> tuple[bool, str]:
        idle = time.monotonic() - self.heartbeat
        if idle > self.stall_after_s:
            return False, f"worker loop stalled for {idle:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.not_ready:
            return False, "; ".join(f"{k}: {v}" for k, v in sorted(self.not_ready.items()))
        if self.assigned == 0:
            return False, "no partitions assigned"
        return True, f"ok: {self.assigned} partitions assigned"
