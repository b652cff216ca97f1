"""Version 1 of the LLM gateway usage event: the wire contract.

Gateways (written in Go) publish one usage event per Kafka message: a single
JSON object, UTF-8 encoded. This module is the source of truth for that
format. The JSON Schema checked in as ``schemas/usage_event.v1.schema.json``
is generated from :class:`UsageEventV1` (``make schema``, i.e.
``python -m schemas``), and a test fails when the checked-in file is stale.

Compatibility rules
-------------------
* ``schema_version`` is the integer ``1``. A breaking change gets a new
  version (and a new model); a consumer rejects versions it does not know.
* Unknown fields are ignored, so a producer may add optional fields in a
  backwards-compatible ("minor") change without breaking older consumers.
* Every optional field defaults to its zero value (``""``, ``0``, ``false``),
  which is what Go's ``encoding/json`` produces for an unset struct field, and
  what we get when a field is absent, so ``omitempty`` on the Go side is fine.

Strictness (deliberate, for a wire contract)
--------------------------------------------
* Integers must be JSON integers: ``"1"``, ``1.0``, ``1e2`` and ``true`` are
  all rejected, including for ``schema_version`` (pydantic's ``Literal[1]``
  would otherwise accept ``1.0`` and ``true``, because ``True == 1.0 == 1``
  in Python).
* Strings must be JSON strings (numbers are not coerced) and may not contain
  control characters (C0 ``U+0000..U+001F``, DEL ``U+007F``, C1
  ``U+0080..U+009F``): they end up as Prometheus label values and in logs.
  Any other Unicode (letters of any script, emoji, ...) is allowed.
* ``occurred_at`` must be an RFC 3339 ``date-time`` with an explicit offset
  (``Z`` or ``+hh:mm``/``-hh:mm``), between :data:`OCCURRED_AT_MIN` and
  :data:`OCCURRED_AT_MAX` (exclusive). It is parsed here (see
  :data:`RFC3339_PATTERN`) because pydantic's datetime parser would also accept
  unix timestamps (as numbers *and* as numeric strings), times without
  seconds, ``+hhmm`` offsets and ``_`` or space as the date/time separator.
  ``T``/``Z`` may be lower case (RFC 3339 allows it). Leap seconds (``:60``)
  are rejected (``datetime`` cannot hold them; Go never emits them). Fractions
  beyond microseconds (Go emits up to nanoseconds) are truncated. The lower
  bound catches Go's zero ``time.Time`` (``0001-01-01T00:00:00Z``); both
  bounds keep later UTC conversion from overflowing ``datetime``. The offset
  given by the producer is preserved (``datetime.timezone``). Python callers
  may pass an aware ``datetime`` instead of a string.
* Lengths are counted in Unicode code points (as JSON Schema's
  ``maxLength`` does), not in bytes (as Go's ``len`` does).
* ``cache_read_tokens`` and ``cache_input_tokens`` (the seed tracker's name)
  are one quantity under two names (:data:`SAME_QUANTITY`): an event may carry
  either, or both with the same value; both with different values is
  rejected (error type ``cache_tokens_conflict``). New producers send
  ``cache_read_tokens``.
"""

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic_core import PydanticCustomError, PydanticKnownError

SCHEMA_VERSION: Final = 1
"""The only ``schema_version`` this model accepts."""

SCHEMA_ID: Final = "urn:llm-usage-consumer:schema:usage_event:v1"
"""``$id`` of the generated JSON Schema."""

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

# String length limits, in Unicode code points.
MAX_EVENT_ID_LENGTH: Final = 128
"""``event_id``: room for a UUID, a ULID or a prefixed ID."""
MAX_LABEL_LENGTH: Final = 128
"""``provider``, ``provider_uuid``, ``rule_uuid``, ``scenario``, ``user_tier``, ``operation``."""
MAX_MODEL_LENGTH: Final = 256
"""``model``, ``request_model``: provider model IDs can be long paths/ARNs."""
MAX_ERROR_CODE_LENGTH: Final = 256
"""``error_code``."""

# Integer limits (inclusive); the lower bound is always 0.
MAX_TOKENS: Final = 10_000_000
"""Per token field; larger than any context window today."""
MAX_LATENCY_MS: Final = 86_400_000
"""24 hours, in milliseconds."""

SAME_QUANTITY: Final = (("cache_read_tokens", "cache_input_tokens"),)
"""Pairs of fields that name one quantity (current name first, then the seed's): an event may
carry either name; both present with different values is a ``cache_tokens_conflict``."""

# Time window for occurred_at: OCCURRED_AT_MIN <= occurred_at < OCCURRED_AT_MAX.
OCCURRED_AT_MIN: Final = datetime(2000, 1, 1, tzinfo=UTC)
OCCURRED_AT_MAX: Final = datetime(2100, 1, 1, tzinfo=UTC)

NO_CONTROL_CHARS_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]*$"
"""Pattern every string field must match: no C0, DEL or C1 control characters.

Written with ``\\xNN`` escapes (not literal characters) so it means the same in
pydantic's Rust regex engine, ECMA-262 (JSON Schema) and Go's ``regexp``.
"""

RFC3339_PATTERN: Final = (
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
"""Syntax of RFC 3339 ``date-time`` (section 5.6), offset required.

Value ranges (month 1-12, hour 0-23, day of month, ...) are checked when
parsing. Plain capturing groups only, so the same text works in Python, ECMA-262
(JSON Schema) and Go.
"""

_RFC3339 = re.compile(RFC3339_PATTERN)


def _require_json_integer(value: object) -> object:
    """Reject anything but a real integer before ``Literal[1]`` sees it.

    ``Literal[1]`` compares by equality, so it would accept ``1.0`` and ``true``.
    """
    if type(value) is not int:
        raise PydanticKnownError("int_type")
    return value


def _parse_rfc3339(value: object) -> object:
    """Parse ``occurred_at``: RFC 3339 strings, or ``datetime`` objects from Python callers.

    Parsing here rather than in pydantic's datetime validator, because the latter
    also accepts unix timestamps (numbers and numeric strings), ``HH:MM`` without
    seconds, ``+hhmm`` offsets and ``_`` or space as the date/time separator.
    """
    if isinstance(value, datetime):
        return value
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise PydanticCustomError(
            "rfc3339_datetime",
            "Input should be an RFC 3339 date-time with a time zone offset,"
            " e.g. 2024-05-01T12:34:56.789Z",
        )
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    # Sub-microsecond digits (Go emits nanoseconds) are truncated.
    microsecond = int((fraction[1:] + "00000")[:6]) if fraction else 0
    if offset in ("Z", "z"):
        tz = UTC
    else:
        offset_hours, offset_minutes = int(offset[1:3]), int(offset[4:6])
        if offset_hours > 23 or offset_minutes > 59:
            raise PydanticKnownError("datetime_parsing", {"error": "invalid time zone offset"})
        delta = timedelta(hours=offset_hours, minutes=offset_minutes)
        tz = timezone(-delta if offset[0] == "-" else delta)
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            microsecond,
            tzinfo=tz,
        )
    except ValueError as exc:  # out-of-range component, e.g. February 30 or second 60
        raise PydanticKnownError("datetime_parsing", {"error": str(exc)}) from None


parse_rfc3339 = _parse_rfc3339
"""The ``occurred_at`` parser, for other decoders that must agree with this model."""


def _check_occurred_at_range(value: datetime) -> datetime:
    if not OCCURRED_AT_MIN <= value < OCCURRED_AT_MAX:
        raise PydanticCustomError(
            "occurred_at_out_of_range",
            "Input should be at or after {min} and before {max}",
            {"min": "2000-01-01T00:00:00Z", "max": "2100-01-01T00:00:00Z"},
        )
    return value


def _text(max_length: int, *, min_length: int | None = None) -> Any:
    """``Field`` constraints shared by all string fields."""
    return Field(
        strict=True,
        min_length=min_length,
        max_length=max_length,
        pattern=NO_CONTROL_CHARS_PATTERN,
    )


SchemaVersion = Annotated[Literal[1], BeforeValidator(_require_json_integer)]
EventId = Annotated[str, _text(MAX_EVENT_ID_LENGTH, min_length=1)]
RequiredLabel = Annotated[str, _text(MAX_LABEL_LENGTH, min_length=1)]
Label = Annotated[str, _text(MAX_LABEL_LENGTH)]
RequiredModelName = Annotated[str, _text(MAX_MODEL_LENGTH, min_length=1)]
ModelName = Annotated[str, _text(MAX_MODEL_LENGTH)]
ErrorCode = Annotated[str, _text(MAX_ERROR_CODE_LENGTH)]
TokenCount = Annotated[int, Field(strict=True, ge=0, le=MAX_TOKENS)]
LatencyMs = Annotated[int, Field(strict=True, ge=0, le=MAX_LATENCY_MS)]
OccurredAt = Annotated[
    AwareDatetime,
    BeforeValidator(_parse_rfc3339),
    AfterValidator(_check_occurred_at_range),
    Field(strict=True, json_schema_extra={"pattern": RFC3339_PATTERN}),
]
Status = Literal["success", "error", "canceled"]


class UsageEventV1(BaseModel):
    """One LLM request handled by a gateway, as published to Kafka (version 1).

    The message value is exactly one JSON object, UTF-8 encoded, without a
    byte order mark. Unknown properties are ignored by consumers, so new
    optional properties can be added without a version bump. Optional
    properties default to their zero value ("", 0, false) and may be omitted.
    Integers must be JSON integer literals (no fraction or exponent: 1.0 and
    1e2 are rejected). Strings must not contain control characters
    (U+0000-U+001F, U+007F-U+009F). String lengths are in Unicode code points.
    When a key appears twice, the last occurrence wins.
    """

    model_config = ConfigDict(
        title="UsageEventV1",
        extra="ignore",
        frozen=True,
        strict=True,
        hide_input_in_errors=True,
        json_schema_extra={
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": SCHEMA_ID,
            "additionalProperties": True,
        },
    )

    schema_version: SchemaVersion = Field(
        description="Version of this event format. Always the integer 1 for this schema; a"
        " consumer rejects versions it does not know.",
    )
    event_id: EventId = Field(
        description="Unique ID of this event, chosen by the producer (a UUID or ULID is"
        " recommended). Retries of the same event must reuse it, so that duplicates can be"
        " traced (this consumer counts every message it reads; it does not de-duplicate).",
    )
    occurred_at: OccurredAt = Field(
        description="When the usage happened (normally when the gateway finished the"
        " request), as an RFC 3339 date-time with an explicit offset, e.g."
        " 2024-05-01T12:34:56.789Z. Go's time.Time marshals to this format. Must be"
        " in [2000-01-01T00:00:00Z, 2100-01-01T00:00:00Z); an unset Go time.Time"
        " (year 1) is rejected. Precision beyond microseconds is truncated.",
    )
    provider: RequiredLabel = Field(
        description='Upstream LLM provider that served the request, e.g. "openai".',
    )
    model: RequiredModelName = Field(
        description="Model that actually served the request, as named by the provider.",
    )
    status: Status = Field(
        description='Outcome of the request: "success", "error" (failed; see error_code)'
        ' or "canceled" (the client went away or the request was aborted).',
    )
    provider_uuid: Label = Field(
        default="",
        description="Gateway ID of the provider configuration/account used; empty if unknown.",
    )
    request_model: ModelName = Field(
        default="",
        description="Model the client asked for, when it differs from model (aliases,"
        " routing, fallbacks); empty if not recorded.",
    )
    rule_uuid: Label = Field(
        default="",
        description="ID of the gateway routing rule that chose the provider/model; empty"
        " if no rule applied.",
    )
    scenario: Label = Field(
        default="",
        description="Use case the caller tagged the request with; empty if none.",
    )
    error_code: ErrorCode = Field(
        default="",
        description='Provider or gateway error code when status is "error"; empty otherwise.',
    )
    user_tier: Label = Field(
        default="",
        description="Tier/plan of the calling user or tenant; empty if unknown.",
    )
    operation: Label = Field(
        default="",
        description="GenAI operation the request performed (gen_ai.operation.name), e.g."
        ' "chat", "text_completion", "embeddings"; empty means "chat".',
        examples=["chat", "text_completion", "embeddings", "generate_content"],
    )
    input_tokens: TokenCount = Field(
        default=0,
        description=(
            "Input (prompt) tokens consumed, EXCLUDING tokens served from the prompt cache"
            f" (those go in cache_read_tokens). 0 to {MAX_TOKENS}."
        ),
    )
    output_tokens: TokenCount = Field(
        default=0,
        description=f"Output (completion) tokens as reported by the provider. 0 to {MAX_TOKENS}.",
    )
    cache_read_tokens: TokenCount = Field(
        default=0,
        description=f"Input tokens served from the provider's prompt cache. 0 to {MAX_TOKENS}."
        " The same quantity as cache_input_tokens (its older name): send one of the two, or"
        " both with the same value.",
    )
    cache_input_tokens: TokenCount = Field(
        default=0,
        description="The older name of cache_read_tokens, still accepted; new producers send"
        f" cache_read_tokens. 0 to {MAX_TOKENS}.",
    )
    cache_write_tokens: TokenCount = Field(
        default=0,
        description="Input tokens written to the provider's prompt cache; they are already"
        f" counted in input_tokens. 0 to {MAX_TOKENS}.",
    )
    system_tokens: TokenCount = Field(
        default=0,
        description=f"Tokens consumed by system-level operations. 0 to {MAX_TOKENS}.",
    )
    latency_ms: LatencyMs = Field(
        default=0,
        description=f"Wall-clock time the gateway spent on the request, in milliseconds."
        f" 0 to {MAX_LATENCY_MS} (24 h).",
    )
    streamed: bool = Field(
        default=False,
        strict=True,
        description="Whether the response was streamed to the client.",
    )

    @model_validator(mode="after")
    def _one_quantity_one_value(self) -> "UsageEventV1":
        """Both names of a quantity end up holding the value that was sent under either."""
        sent = self.model_fields_set
        for current, older in SAME_QUANTITY:
            mine, theirs = getattr(self, current), getattr(self, older)
            if current in sent and older in sent and mine != theirs:
                raise PydanticCustomError(
                    "cache_tokens_conflict",
                    "{current} ({mine}) and {older} ({theirs}) name the same quantity and must"
                    " agree when both are sent",
                    {"current": current, "mine": mine, "older": older, "theirs": theirs},
                )
            if older in sent and current not in sent:
                self.__dict__[current] = theirs  # frozen: set once, while validating
            elif current in sent and older not in sent:
                self.__dict__[older] = mine
        return self


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of :class:`UsageEventV1`, for producers."""
    return UsageEventV1.model_json_schema(mode="validation")


def json_schema_text() -> str:
    """Canonical text of ``schemas/usage_event.v1.schema.json``."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
