"""The record stage: valid events into the profile's trackers, one `record_batch` call each."""

from __future__ import annotations

import dataclasses
from collections.abc import Set as AbstractSet
from typing import Final

from consumer.usage.options import UsageLike, UsageOptions
from consumer.usage.profiles import ProfileTracker

__all__ = ["OPTION_FIELDS", "Recorder", "to_options"]

OPTION_FIELDS: Final = tuple(f.name for f in dataclasses.fields(UsageOptions))
"""What the tracker reads of an event: every UsageOptions field (the event's envelope, i.e.
schema_version, event_id and occurred_at, is not recorded)."""


def to_options(event: UsageLike) -> UsageOptions:
    """A validated event (or anything UsageLike) as the tracker's per-request options."""
    return UsageOptions(**{name: getattr(event, name) for name in OPTION_FIELDS})


class Recorder:
    def __init__(self, *trackers: ProfileTracker) -> None:
        if not trackers:
            raise ValueError("a recorder needs at least one tracker")
        self._trackers = trackers

    def record(self, events: list[UsageLike]) -> int:
        """One `record_batch` call per tracker per batch; returns how many events were recorded.

        Events go in as decoded: they carry UsageOptions' fields (see UsageLike), and copying
        each into a UsageOptions would cost more than recording it.
        """
        recorded = 0
        for tracker in self._trackers:
            recorded = tracker.record_batch(events)
        return recorded

    def forget(self, stale: AbstractSet[object]) -> None:
        """Every tracker drops its direct references to these SDK aggregations."""
        for tracker in self._trackers:
            tracker.forget(stale)
