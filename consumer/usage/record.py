"""The record stage: valid events into the TokenTracker, one `record_batch` call per batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Final

from consumer.usage.options import UsageLike, UsageOptions
from consumer.usage.tracker import TokenTracker

__all__ = ["OPTION_FIELDS", "Recorder", "to_options"]

OPTION_FIELDS: Final = tuple(f.name for f in dataclasses.fields(UsageOptions))
"""What the tracker reads of an event: every UsageOptions field (the event's envelope, i.e.
schema_version, event_id and occurred_at, is not recorded)."""


def to_options(event: UsageLike) -> UsageOptions:
    """A validated event (or anything UsageLike) as the tracker's per-request options."""
    return UsageOptions(**{name: getattr(event, name) for name in OPTION_FIELDS})


class Recorder:
    def __init__(self, tracker: TokenTracker) -> None:
        self._tracker = tracker

    def record(self, events: Iterable[UsageLike]) -> int:
        """One `record_batch` call per batch; returns how many events were recorded.

        Events go in as decoded: they carry UsageOptions' fields (see UsageLike), and copying
        each into a UsageOptions would cost more than recording it.
        """
        return self._tracker.record_batch(events)
