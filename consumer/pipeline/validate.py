"""Validate stage: one Kafka message value -> a ``UsageEventV1`` or a ``Rejection``.

:func:`decode` never raises for any input bytes. The happy path is a single call
to ``UsageEventV1.model_validate_json`` on the raw bytes (jiter parses and
validates UTF-8 in one pass; nothing is decoded or copied beforehand). All
classification work happens only after validation has failed.

Classification, in order:

* ``None`` (a tombstone) or ``b""`` -> ``EMPTY``.
* more than ``max_bytes`` bytes -> ``TOO_LARGE``; the payload is not parsed.
  Exactly ``max_bytes`` is accepted.
* JSON syntax error -> ``NOT_UTF8`` if the bytes are not valid UTF-8 (the detail
  gives the byte offset), otherwise ``INVALID_JSON`` (the detail is jiter's
  message with line and column).
* top-level value is not an object -> ``NOT_AN_OBJECT`` (detail names the JSON
  type received).
* ``schema_version`` is a JSON integer other than 1 -> ``UNSUPPORTED_SCHEMA_VERSION``
  (detail names the version). This wins over any other field error, because a
  different version may legitimately have different fields. A
  ``schema_version`` that is not an integer at all (``"1"``, ``1.0``, ``true``,
  ``null``) is a malformed v1 event, not a future version: ``SCHEMA_VIOLATION``.
* ``cache_read_tokens`` and ``cache_input_tokens`` both sent, with different
  values (every field valid otherwise) -> ``CACHE_TOKENS_CONFLICT``, the
  detail naming both values.
* anything else -> ``SCHEMA_VIOLATION``, detail listing the first
  :data:`MAX_LISTED_ERRORS` failing fields, e.g.
  ``input_tokens: Input should be a valid integer (got '12'); model: Field required``.

Details are at most :data:`MAX_DETAIL_LENGTH` characters, printable ASCII only:
values taken from the payload are shown through ``ascii()`` (escaping control
and non-ASCII characters) and clipped to :data:`MAX_INPUT_REPR_LENGTH`
characters. The payload itself is never included.

Parser behaviours (verified against pydantic 2.14 / pydantic-core 2.50, and
pinned down by tests/test_validate.py):

Invalid UTF-8
    jiter validates UTF-8 in every string, known field, unknown field or key
    alike, including overlong forms and UTF-8-encoded surrogates
    (``ED A0 80``); outside strings any non-ASCII byte is a syntax error. So any
    invalid UTF-8 anywhere fails parsing -> ``NOT_UTF8``; an accepted event
    always came from valid UTF-8.
Lone surrogate escapes (``"\\ud800"``, ``"\\udc00"``, ``"\\ud800\\u0041"``)
    Rejected by jiter wherever they occur -> ``INVALID_JSON``. Go's
    ``encoding/json`` never emits them (it writes U+FFFD for invalid UTF-8), so
    this only hits foreign producers; in exchange no accepted string contains a
    surrogate, so every string can be re-encoded as UTF-8 (metrics, logs).
``NaN``, ``Infinity``, ``-Infinity`` literals
    Not JSON, but jiter (as used by pydantic) accepts them as floats; pydantic
    has no switch to refuse them at parse time (``allow_inf_nan=False`` only
    affects float fields). In a known field they fail type validation (no v1
    field takes a float) -> ``SCHEMA_VIOLATION`` naming the field; in an
    unknown field they are silently ignored like the rest of that field. Go's
    ``encoding/json`` refuses to marshal NaN/Inf, so this is theoretical.
    (Lowercase ``nan`` is a syntax error -> ``INVALID_JSON``.) Numbers too large
    for a float (``1e400``) become infinity, with the same outcome.
Huge integers
    Up to 4300 digits parse (then fail the field's range check ->
    ``SCHEMA_VIOLATION``, or are ignored in unknown fields); more digits is
    "number out of range" -> ``INVALID_JSON``, wherever it occurs.
Duplicate keys
    Accepted, the last occurrence wins, the same as Go's ``encoding/json``.
    Detecting duplicates would need a second full parse of every message (jiter
    and pydantic offer no hook), so we chose not to. This includes
    ``schema_version``: ``{"schema_version": 2, ..., "schema_version": 1}`` is a v1
    event. Go producers marshalling a struct cannot emit duplicate keys.
Deep nesting
    jiter has a fixed recursion limit: 201 nested arrays/objects parse, 202 or
    more fail with "recursion limit exceeded" -> ``INVALID_JSON``, whether at the
    top level or inside an ignored unknown field, and without touching Python's
    recursion limit (no ``RecursionError``; 10,000 and 100,000 levels tested).
    The v1 event itself is flat, so this only affects unknown fields.
Byte order mark
    A UTF-8 BOM prefix is a syntax error (RFC 8259 forbids sending one) ->
    ``INVALID_JSON``, with the detail saying so. A UTF-16/32 payload is not
    UTF-8 -> ``NOT_UTF8``.
Trailing data
    Whitespace (space, tab, CR, LF) after the object is accepted; anything else
    (garbage, a second object) -> ``INVALID_JSON`` ("trailing characters").
Escaped control characters (``"\\u0000"``)
    Valid JSON; in a known string field they fail the no-control-characters
    rule -> ``SCHEMA_VIOLATION``; in unknown fields they are ignored. Raw
    (unescaped) control characters inside strings are a syntax error ->
    ``INVALID_JSON``.
"""

import codecs
import enum
import json
import operator
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal, cast, get_origin

import msgspec
from annotated_types import Ge, Le, MaxLen, MinLen
from pydantic import AwareDatetime, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from consumer.usage.options import UsageLike
from schemas import NO_CONTROL_CHARS_PATTERN, SCHEMA_VERSION, UsageEventV1
from schemas.usage_event import OCCURRED_AT_MAX, OCCURRED_AT_MIN, SAME_QUANTITY

__all__ = [
    "MAX_DETAIL_LENGTH",
    "MAX_INPUT_REPR_LENGTH",
    "MAX_LISTED_ERRORS",
    "FastUsageEvent",
    "Reason",
    "Rejection",
    "UnknownFields",
    "decode",
    "decode_fast",
    "known_as",
    "unknown_fields",
]

MAX_DETAIL_LENGTH: Final = 512
"""Upper bound on ``Rejection.detail``, in characters."""
MAX_LISTED_ERRORS: Final = 3
"""How many field errors a ``SCHEMA_VIOLATION`` detail lists."""
MAX_INPUT_REPR_LENGTH: Final = 40
"""Upper bound on how much of an offending value is quoted in a detail."""

_ELLIPSIS: Final = "..."


class Reason(enum.StrEnum):
    """Why a message was rejected. Values are stable: use them as metric labels."""

    EMPTY = "empty"
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    SCHEMA_VIOLATION = "schema_violation"
    CACHE_TOKENS_CONFLICT = "cache_tokens_conflict"
    UNKNOWN_FIELD = "unknown_field"  # only with unknown_fields=reject


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that is not a valid usage event.

    ``detail`` is short (at most :data:`MAX_DETAIL_LENGTH` characters),
    printable ASCII, and meant for logs and dead-letter headers, never for
    metric labels.
    """

    reason: Reason
    detail: str


UnknownFields = Literal["ignore", "reject"]
_KNOWN_FIELDS: Final = frozenset(UsageEventV1.model_fields)


def _folded(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


_BY_FOLDED: Final = {_folded(name): name for name in UsageEventV1.model_fields}


def known_as(name: str) -> str | None:
    """The schema field an unknown field name means, ignoring case, `_` and `-`
    (`inputTokens` -> `input_tokens`); None if it looks like no field."""
    return _BY_FOLDED.get(_folded(name))


def unknown_fields(value: bytes) -> list[str]:
    """The top-level keys of a valid event that are not schema fields, in order. Parses the
    value again: call it only for events that took the model's path (the fast decoder refuses
    unknown fields, so every event with one does)."""
    return [key for key in json.loads(value) if key not in _KNOWN_FIELDS]


def _unknown_rejection(names: list[str]) -> Rejection:
    shown = [f"{n} (did you mean {m}?)" if (m := known_as(n)) else n for n in names]
    return Rejection(
        Reason.UNKNOWN_FIELD,
        _clip(_clean("unknown fields: " + ", ".join(shown)), MAX_DETAIL_LENGTH),
    )


def decode_fast(
    value: bytes | None, max_bytes: int, unknown: UnknownFields = "ignore"
) -> UsageLike | Rejection:
    """`decode` for the worker's hot path: same verdicts, about 5x faster on valid events.

    A valid event whose fields are all known is decoded by msgspec into a `FastUsageEvent`;
    anything msgspec does not accept (an invalid event, or a valid one with unknown fields)
    goes through `decode`, which stays the authority on what is valid and why not. The fast
    decoder is stricter than the model, never laxer (tests/test_validate_fast.py checks it
    differentially), so an event it accepts is one the model accepts, with the same values.
    """
    if value and len(value) <= max_bytes:
        try:
            return cast(UsageLike, _FAST_DECODER.decode(value))
        except Exception:  # noqa: BLE001, S110 - whatever msgspec refuses, the model judges
            pass
    return decode(value, max_bytes, unknown)


def decode(
    value: bytes | None, max_bytes: int, unknown: UnknownFields = "ignore"
) -> UsageEventV1 | Rejection:
    """Validate one Kafka message value. Never raises for any ``value``.

    Fields the schema does not know are ignored (a producer may be newer than this consumer),
    or, with ``unknown="reject"``, make the event an ``UNKNOWN_FIELD`` rejection naming them.
    """
    if not value:
        if value is None:
            return Rejection(Reason.EMPTY, "message value is null (tombstone)")
        return Rejection(Reason.EMPTY, "message value is empty")
    if len(value) > max_bytes:
        return Rejection(
            Reason.TOO_LARGE, f"message value is {len(value)} bytes, limit is {max_bytes}"
        )
    try:
        event = UsageEventV1.model_validate_json(value)
    except ValidationError as exc:
        return _classify(value, exc.errors(include_url=False))
    if unknown == "reject" and (names := unknown_fields(value)):
        return _unknown_rejection(names)
    return event


def _classify(value: bytes, errors: list[ErrorDetails]) -> Rejection:
    for error in errors:
        if error["type"] == "json_invalid":
            return _syntax_error(value, error)
    for error in errors:
        if error["type"] == "model_type" and not error["loc"]:
            kind = _json_type_name(error["input"])
            return Rejection(
                Reason.NOT_AN_OBJECT, f"top-level JSON value is {kind}, expected an object"
            )
    for error in errors:
        version = error["input"]
        # Any error on an integer schema_version (literal_error, or int_parsing_size for
        # integers too big for the literal check) means "not 1"; other types are violations.
        if error["loc"] == ("schema_version",) and type(version) is int and version != 1:
            return Rejection(
                Reason.UNSUPPORTED_SCHEMA_VERSION,
                f"schema_version {_int_repr(version)} is not supported"
                f" (this consumer understands {SCHEMA_VERSION})",
            )
    for error in errors:
        if error["type"] == "cache_tokens_conflict":
            return Rejection(
                Reason.CACHE_TOKENS_CONFLICT, _clip(_clean(error["msg"]), MAX_DETAIL_LENGTH)
            )
    return Rejection(Reason.SCHEMA_VIOLATION, _field_errors(errors))


def _syntax_error(value: bytes, error: ErrorDetails) -> Rejection:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(Reason.NOT_UTF8, f"invalid UTF-8 at byte offset {exc.start}: {exc.reason}")
    detail = _clean(error["msg"])
    if value.startswith(codecs.BOM_UTF8):
        detail = f"starts with a UTF-8 byte order mark, which is not allowed ({detail})"
    return Rejection(Reason.INVALID_JSON, _clip(detail, MAX_DETAIL_LENGTH))


def _field_errors(errors: list[ErrorDetails]) -> str:
    parts: list[str] = []
    for error in errors[:MAX_LISTED_ERRORS]:
        where = ".".join(str(part) for part in error["loc"]) or "(root)"
        message = _message(error)
        if error["type"] != "missing" and _is_scalar(error["input"]):
            message += f" (got {_value_repr(error['input'])})"
        parts.append(f"{_clean(where)}: {_clean(message)}")
    detail = "; ".join(parts)
    if len(errors) > MAX_LISTED_ERRORS:
        detail += f" (+{len(errors) - MAX_LISTED_ERRORS} more)"
    return _clip(detail, MAX_DETAIL_LENGTH)


def _message(error: ErrorDetails) -> str:
    ctx = error.get("ctx") or {}
    if (
        error["type"] == "string_pattern_mismatch"
        and ctx.get("pattern") == NO_CONTROL_CHARS_PATTERN
    ):
        return "String should not contain control characters (U+0000-U+001F, U+007F-U+009F)"
    return error["msg"]


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float)


def _value_repr(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _int_repr(value)
    if isinstance(value, str):
        return _clip(ascii(value[: MAX_INPUT_REPR_LENGTH + 1]), MAX_INPUT_REPR_LENGTH)
    return _clip(ascii(value), MAX_INPUT_REPR_LENGTH)


def _int_repr(value: int) -> str:
    # str() of a huge int is slow and, beyond sys.get_int_max_str_digits(), raises.
    if value.bit_length() > 64:
        return f"<{value.bit_length()}-bit integer>"
    return str(value)


def _json_type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def _clean(text: str) -> str:
    """Printable ASCII only: escape anything else the way ``ascii()`` would."""
    if text.isascii() and text.isprintable():
        return text
    return ascii(text)[1:-1]


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - len(_ELLIPSIS)] + _ELLIPSIS


# --- the fast decoder ---------------------------------------------------------------------------
#
# FastUsageEvent is derived from UsageEventV1's fields at import time: its names, order, defaults
# and limits are the model's, so a field added to the model is decoded here too. A field of a
# kind this derivation does not know stops the import, naming it: the fast path must never
# accept what it does not check. The two names of one quantity (SAME_QUANTITY) default to UNSET,
# so that __post_init__ can tell "sent" from "absent" as the model's validator does.

# A strict subset of RFC3339_PATTERN whose every match datetime.fromisoformat parses exactly as
# the model's parser does (upper-case T and Z, offsets up to 23:59, at most microseconds, no leap
# second); every other timestamp takes the model's path.
_FAST_TIMESTAMP: Final = (
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])\Z"
)
_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # NO_CONTROL_CHARS_PATTERN's set


def _constraints(field: FieldInfo, kinds: dict[str, type]) -> dict[str, Any]:
    """The model field's constraints of the given kinds, as keyword arguments of msgspec.Meta."""
    return {
        key: getattr(meta, key)
        for meta in field.metadata
        for key, kind in kinds.items()
        if isinstance(meta, kind)
    }


def _fast_type(name: str, field: FieldInfo) -> tuple[Any, str]:
    """The msgspec type of one model field, and its check after decoding ("text", "time", "")."""
    annotation = field.annotation
    if get_origin(annotation) is Literal or annotation is bool:
        return annotation, ""
    if annotation is int:
        return Annotated[int, msgspec.Meta(**_constraints(field, {"ge": Ge, "le": Le}))], ""
    if annotation is str:
        if NO_CONTROL_CHARS_PATTERN not in (getattr(m, "pattern", None) for m in field.metadata):
            raise TypeError(f"no fast decoding for text field {name!r} without the control check")
        lengths = _constraints(field, {"min_length": MinLen, "max_length": MaxLen})
        return Annotated[str, msgspec.Meta(**lengths)], "text"
    if annotation is AwareDatetime:
        return Annotated[str, msgspec.Meta(pattern=_FAST_TIMESTAMP)], "time"
    raise TypeError(f"no fast decoding for field {name!r} of type {annotation!r}")


class _FastEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Unknown fields are *refused* here (and then ignored by the model), so nothing msgspec
    skips unchecked can slip through."""

    def __post_init__(self) -> None:
        # One search over every text field instead of a pattern per field.
        if _CONTROL_CHARS.search("".join(_TEXT_OF(self))) is not None:
            raise ValueError("control character")
        if not OCCURRED_AT_MIN <= datetime.fromisoformat(_TIME_OF(self)) < OCCURRED_AT_MAX:
            raise ValueError("occurred_at out of range")
        for current, older in SAME_QUANTITY:  # as UsageEventV1._one_quantity_one_value
            mine, theirs = getattr(self, current), getattr(self, older)
            if mine is msgspec.UNSET:
                mine = 0 if theirs is msgspec.UNSET else theirs
                setattr(self, current, mine)
            if theirs is msgspec.UNSET:
                setattr(self, older, mine)
            elif theirs != mine:
                raise ValueError("the two names of one quantity disagree")  # the model says why


_FIELDS: Final = {
    name: (*_fast_type(name, field), field) for name, field in UsageEventV1.model_fields.items()
}


def _names(check: str) -> tuple[str, ...]:
    return tuple(name for name, (_kind, c, _field) in _FIELDS.items() if c == check)


if len(_names("time")) != 1:  # _FastEvent.__post_init__ checks the range of exactly one
    raise TypeError(f"the fast decoder checks one timestamp field, found {_names('time')}")
_TEXT_OF: Final = operator.attrgetter(*_names("text"))
_TIME_OF: Final = operator.attrgetter(_names("time")[0])


_SENT_OR_NOT: Final = frozenset(name for pair in SAME_QUANTITY for name in pair)

FastUsageEvent: Final[type[msgspec.Struct]] = msgspec.defstruct(
    "FastUsageEvent",
    [
        (name, kind)
        if field.is_required()
        else (name, kind | msgspec.UnsetType, msgspec.UNSET)
        if name in _SENT_OR_NOT
        else (name, kind, field.default)
        for name, (kind, _check, field) in _FIELDS.items()
    ],
    bases=(_FastEvent,),
    module=__name__,
    kw_only=True,
)
"""UsageEventV1's fields and limits, for msgspec (derived from the model: see above)."""

_FAST_DECODER: Final = msgspec.json.Decoder(FastUsageEvent)
