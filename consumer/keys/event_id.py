"""The `event-id` key strategy: the event's own id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["event_id_key"]


def event_id_key(event: Mapping[str, Any]) -> bytes:
    return str(event["event_id"]).encode("utf-8")
