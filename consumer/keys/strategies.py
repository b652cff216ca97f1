"""The key strategies, registered in one place; one module each.

    attributes  a stable hash of the event's attribute set (consumer.keys.attributes): every
                event of one set lands on one partition, so each worker of a group holds only
                its share of the series (the default of `usage-consumer produce`)
    event-id    the event id: an even spread, but every worker ends up holding nearly every set
    none        no key: the producer's sticky partitioner spreads batches

A strategy is a function from an event (a JSON object as a dict) to its key, or None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from consumer.keys.attributes import attribute_key
from consumer.keys.event_id import event_id_key
from consumer.keys.none import no_key

__all__ = ["KEY_STRATEGIES", "KeyStrategy"]

KeyStrategy = Callable[[Mapping[str, Any]], bytes | None]

KEY_STRATEGIES: Final[dict[str, KeyStrategy]] = {
    "attributes": attribute_key,
    "event-id": event_id_key,
    "none": no_key,
}
