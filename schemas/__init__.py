"""Wire formats consumed by llm-usage-consumer.

Public API of the package; the implementation lives in :mod:`schemas.usage_event`.
``python -m schemas`` prints the JSON Schema of the current event version.
"""

from schemas.usage_event import (
    JSON_SCHEMA_DIALECT,
    MAX_ERROR_CODE_LENGTH,
    MAX_EVENT_ID_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_LATENCY_MS,
    MAX_MODEL_LENGTH,
    MAX_TOKENS,
    NO_CONTROL_CHARS_PATTERN,
    OCCURRED_AT_MAX,
    OCCURRED_AT_MIN,
    RFC3339_PATTERN,
    SCHEMA_ID,
    SCHEMA_VERSION,
    Status,
    UsageEventV1,
    json_schema,
    json_schema_text,
)

__all__ = [
    "JSON_SCHEMA_DIALECT",
    "MAX_ERROR_CODE_LENGTH",
    "MAX_EVENT_ID_LENGTH",
    "MAX_LABEL_LENGTH",
    "MAX_LATENCY_MS",
    "MAX_MODEL_LENGTH",
    "MAX_TOKENS",
    "NO_CONTROL_CHARS_PATTERN",
    "OCCURRED_AT_MAX",
    "OCCURRED_AT_MIN",
    "RFC3339_PATTERN",
    "SCHEMA_ID",
    "SCHEMA_VERSION",
    "Status",
    "UsageEventV1",
    "json_schema",
    "json_schema_text",
]
