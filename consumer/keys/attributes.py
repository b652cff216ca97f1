"""The `attributes` key strategy: a stable hash of the event's attribute set.

Every attribute set is a series each worker holding it keeps; with events keyed by their
attribute set, a set's events all land on one partition (Kafka's key partitioner), so the
workers of a group split the series between them instead of each holding nearly all of them.

The key is part of the wire contract: any producer (this one, the Go publisher) must compute it
the same way, so that one set maps to one partition whoever sent it:

    the values of ATTRIBUTE_KEY_FIELDS, in that order, as text (an absent field is its zero
    value, booleans true/false), joined with U+001F, UTF-8 encoded, SHA-256, the first 16 bytes
    as 32 lowercase hex digits.

The fields are the labels every metrics profile has (consumer.usage.options): provider,
provider_uuid, model, request_model, scenario, streamed, rule_uuid, user_tier. Every attribute
set of every profile refines that set of values, so each lands on one partition whatever the
profile. A key over all labels would not: the `llm` profile has no operation label, so its sets
would be spread over the partitions of their operations (and the `genai` profile's over those of
their statuses), and each worker would again hold a share of every set (measured with the
fleet benchmark: 3 workers held 1.46x the series of one, not 1.0x). Keying by attribute set sends a
set's whole traffic to one partition: a very hot set (one model taking most of the traffic) is
a hot partition; docs/producing.md measures the skew of the synthetic mix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from consumer.usage.options import GENAI_LABELS, LLM_LABELS
from schemas import UsageEventV1

__all__ = ["ATTRIBUTE_KEY_FIELDS", "attribute_key"]

ATTRIBUTE_KEY_FIELDS: Final[tuple[str, ...]] = tuple(
    sorted(set(LLM_LABELS.fields) & set(GENAI_LABELS.fields))
)
"""The event fields whose values make the key, in key order (sorted by name)."""

# The definition takes the values as sent: true only while no shared label is cut or defaulted.
if any(
    label.default is not None or label.max_bytes is not None
    for labels in (LLM_LABELS, GENAI_LABELS)
    for label in labels.labels
    if label.field in ATTRIBUTE_KEY_FIELDS
):
    raise TypeError("a label of the attribute key is cut or defaulted: extend its definition")

_SEPARATOR: Final = "\x1f"
_DEFAULTS: Final = {name: UsageEventV1.model_fields[name].default for name in ATTRIBUTE_KEY_FIELDS}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def attribute_key(event: Mapping[str, Any]) -> bytes:
    joined = _SEPARATOR.join(
        _text(event.get(name, _DEFAULTS[name])) for name in ATTRIBUTE_KEY_FIELDS
    )
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:32].encode("ascii")
