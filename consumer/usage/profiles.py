"""Metrics profiles: which instruments one request becomes. One module per profile, one seam.

A profile is a tracker: something built from a Meter that records one request
(`record_usage`) or a batch of them exactly as per request (`record_batch`), and forgets the SDK
aggregations an idle-series expiry removed (`forget`). The worker's
`metrics_profile` setting names one of `PROFILES`, or a combination of them from
`COMBINATIONS`; the recorder (consumer.usage.record) hands every batch to each tracker built.

    llm     the seed tracker's eight `llm.*` instruments (consumer.usage.tracker)
    genai   the OpenTelemetry GenAI client metrics (consumer.usage.genai)
    both    both sets, from the same events

A third profile is one new module with a tracker and one line in `PROFILES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Final, Protocol

from opentelemetry.metrics import Meter

from consumer.usage.genai import GenAiTracker
from consumer.usage.options import UsageLike, UsageOptions
from consumer.usage.tracker import TokenTracker

__all__ = [
    "COMBINATIONS",
    "PROFILES",
    "Profile",
    "ProfileTracker",
    "build_trackers",
    "describe",
    "members",
    "profile_names",
]


class ProfileTracker(Protocol):
    def record_usage(self, opts: UsageOptions) -> None: ...
    def record_batch(self, opts: Iterable[UsageLike]) -> int: ...
    def forget(self, stale: AbstractSet[object]) -> None: ...


@dataclass(frozen=True)
class Profile:
    summary: str
    """What the profile exports, for the start-up log."""
    build: Callable[[Meter, int], ProfileTracker]
    """Its tracker, from a meter and the number of attribute sets to remember."""


PROFILES: Final[dict[str, Profile]] = {
    "llm": Profile(
        "the seed tracker's llm.* instruments",
        lambda meter, sets: TokenTracker(meter, remembered_sets=sets),
    ),
    "genai": Profile(
        "the OpenTelemetry GenAI client metrics (gen_ai.client.*)",
        lambda meter, sets: GenAiTracker(meter, remembered_sets=sets),
    ),
}
COMBINATIONS: Final[dict[str, tuple[str, ...]]] = {"both": ("llm", "genai")}


def profile_names() -> tuple[str, ...]:
    return (*PROFILES, *COMBINATIONS)


def members(name: str) -> tuple[str, ...]:
    """The profiles `name` stands for; KeyError, naming the choices, for an unknown one."""
    found = COMBINATIONS.get(name, (name,))
    if any(member not in PROFILES for member in found):
        raise KeyError(f"unknown metrics profile {name!r}: one of {', '.join(profile_names())}")
    return found


def describe(name: str) -> str:
    return "; and ".join(PROFILES[member].summary for member in members(name))


def build_trackers(name: str, meter: Meter, remembered_sets: int) -> tuple[ProfileTracker, ...]:
    """The trackers of profile (or combination) `name`, in `members` order."""
    return tuple(PROFILES[member].build(meter, remembered_sets) for member in members(name))
