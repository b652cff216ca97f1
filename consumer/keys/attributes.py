"""The `attributes` key strategy: a stable hash of the event's attribute set.

Every attribute set is a series each worker holding it keeps; with events keyed by their
attribute set, a set's events all land on one partition (Kafka's key partitioner), so the
workers of a group split the series between them instead of each holding nearly all of them.

The key is part of the wire contract: any producer (this one, the Go publisher) must compute it
the same way, so that one set maps to one partition whoever sent it:

    the values of ATTRIBUTE_KEY_FIELDS, in that order, as their attributes hold them (an
    absent field is its zero value; an empty operation is "chat"; the error code is cut to
    64 UTF-8 bytes on a character boundary), as text (booleans as true/false), joined with
    U+001F, UTF-8 encoded, SHA-256, the first 16 bytes as 32 lowercase hex digits.

The fields are every label of every metrics profile (consumer.usage.options), so two events
with the same key have the same attribute set in every profile. Keying by attribute set sends a
set's whole traffic to one partition: a very hot set (one model taking most of the traffic) is
a hot partition; docs/producing.md measures the skew of the synthetic mix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from consumer.usage.options import GENAI_LABELS, LLM_LABELS, Label, truncate_utf8
from schemas import UsageEventV1

__all__ = ["ATTRIBUTE_KEY_FIELDS", "attribute_key"]

_LABELS: Final[dict[str, Label]] = {
    label.field: label for labels in (LLM_LABELS, GENAI_LABELS) for label in labels.labels
}
ATTRIBUTE_KEY_FIELDS: Final[tuple[str, ...]] = tuple(sorted(_LABELS))
"""The event fields whose values make the key, in key order (sorted by name)."""

_SEPARATOR: Final = "\x1f"


def _text(name: str, event: Mapping[str, Any]) -> str:
    value = event.get(name, UsageEventV1.model_fields[name].default)
    label = _LABELS[name]
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if not text and label.default is not None:
        return label.default
    return truncate_utf8(text, label.max_bytes) if label.max_bytes is not None else text


def attribute_key(event: Mapping[str, Any]) -> bytes:
    joined = _SEPARATOR.join(_text(name, event) for name in ATTRIBUTE_KEY_FIELDS)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:32].encode("ascii")
