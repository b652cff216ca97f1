"""The v1 usage event contract: schemas/usage_event.py and its generated artefacts."""

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import schemas
from schemas import (
    MAX_ERROR_CODE_LENGTH,
    MAX_EVENT_ID_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_LATENCY_MS,
    MAX_MODEL_LENGTH,
    MAX_TOKENS,
    SCHEMA_ID,
    SCHEMA_VERSION,
    UsageEventV1,
    json_schema,
    json_schema_text,
)

SCHEMAS_DIR = Path(schemas.__file__).parent
SCHEMA_FILE = SCHEMAS_DIR / "usage_event.v1.schema.json"
EXAMPLES = sorted((SCHEMAS_DIR / "examples").glob("*.json"))

REQUIRED = ("schema_version", "event_id", "occurred_at", "provider", "model", "status")
STRING_FIELDS = {
    "event_id": MAX_EVENT_ID_LENGTH,
    "provider": MAX_LABEL_LENGTH,
    "model": MAX_MODEL_LENGTH,
    "provider_uuid": MAX_LABEL_LENGTH,
    "request_model": MAX_MODEL_LENGTH,
    "rule_uuid": MAX_LABEL_LENGTH,
    "scenario": MAX_LABEL_LENGTH,
    "error_code": MAX_ERROR_CODE_LENGTH,
    "user_tier": MAX_LABEL_LENGTH,
    "operation": MAX_LABEL_LENGTH,
}
OPTIONAL_STRINGS = (
    "provider_uuid",
    "request_model",
    "rule_uuid",
    "scenario",
    "error_code",
    "user_tier",
    "operation",
)
NON_EMPTY_STRINGS = ("event_id", "provider", "model")
INT_FIELDS = {
    "input_tokens": MAX_TOKENS,
    "output_tokens": MAX_TOKENS,
    "cache_read_tokens": MAX_TOKENS,
    "cache_input_tokens": MAX_TOKENS,
    "cache_write_tokens": MAX_TOKENS,
    "system_tokens": MAX_TOKENS,
    "latency_ms": MAX_LATENCY_MS,
}
DEFAULTS: dict[str, Any] = {
    "provider_uuid": "",
    "request_model": "",
    "rule_uuid": "",
    "scenario": "",
    "error_code": "",
    "user_tier": "",
    "operation": "",
    "input_tokens": 0,
    "output_tokens": 0,
    "cache_read_tokens": 0,
    "cache_input_tokens": 0,
    "cache_write_tokens": 0,
    "system_tokens": 0,
    "latency_ms": 0,
    "streamed": False,
}
CONTROL_CHARS = ["\x00", "\x07", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f"]


def minimal(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "evt-1",
        "occurred_at": "2024-05-01T12:00:00Z",
        "provider": "openai",
        "model": "gpt-4o",
        "status": "success",
    }
    event.update(overrides)
    return event


def parse(event: dict[str, Any]) -> UsageEventV1:
    return UsageEventV1.model_validate_json(json.dumps(event))


def errors_of(event: dict[str, Any]) -> list[tuple[str, tuple[int | str, ...]]]:
    with pytest.raises(ValidationError) as info:
        parse(event)
    return [(e["type"], e["loc"]) for e in info.value.errors()]


def without(field: str) -> dict[str, Any]:
    event = minimal()
    del event[field]
    return event


# --- accepted -----------------------------------------------------------------------------


def test_minimal_event_gets_zero_value_defaults() -> None:
    event = parse(minimal())
    assert event.model_dump() == {
        "schema_version": 1,
        "event_id": "evt-1",
        "occurred_at": datetime(2024, 5, 1, 12, tzinfo=UTC),
        "provider": "openai",
        "model": "gpt-4o",
        "status": "success",
        **DEFAULTS,
    }


def test_all_fields_set() -> None:
    values: dict[str, Any] = {
        "provider_uuid": "pu",
        "request_model": "rm",
        "rule_uuid": "ru",
        "scenario": "sc",
        "error_code": "ec",
        "user_tier": "ut",
        "operation": "embeddings",
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_read_tokens": 3,
        "cache_input_tokens": 3,
        "cache_write_tokens": 1,
        "system_tokens": 4,
        "latency_ms": 5,
        "streamed": True,
    }
    assert values.keys() == DEFAULTS.keys()
    dumped = parse(minimal(**values)).model_dump()
    assert {k: dumped[k] for k in values} == values


@pytest.mark.parametrize("status", ["success", "error", "canceled"])
def test_every_status_accepted(status: str) -> None:
    assert parse(minimal(status=status)).status == status


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01t12:00:00z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00+00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00-00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        (
            "2024-05-01T17:30:00+05:30",
            datetime(2024, 5, 1, 17, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ),
        ("2024-05-01T12:00:00.5Z", datetime(2024, 5, 1, 12, 0, 0, 500_000, tzinfo=UTC)),
        # Go's RFC3339Nano: nanoseconds are truncated to microseconds.
        ("2024-05-01T12:00:00.123456789Z", datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2000-01-01T00:00:00Z", datetime(2000, 1, 1, tzinfo=UTC)),
        ("2099-12-31T23:59:59.999999Z", datetime(2099, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)),
        # 2100-01-01 local time, but still 2099 in UTC.
        (
            "2100-01-01T00:30:00+01:00",
            datetime(2100, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
        ),
    ],
)
def test_occurred_at_accepted(text: str, expected: datetime) -> None:
    occurred_at = parse(minimal(occurred_at=text)).occurred_at
    assert occurred_at == expected
    assert occurred_at.utcoffset() == expected.utcoffset()


def test_occurred_at_keeps_producer_offset() -> None:
    occurred_at = parse(minimal(occurred_at="2024-05-01T14:00:00+02:00")).occurred_at
    assert occurred_at.utcoffset() == timedelta(hours=2)
    assert occurred_at.astimezone(UTC) == datetime(2024, 5, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(("field", "limit"), sorted(STRING_FIELDS.items()))
def test_string_at_max_length_accepted(field: str, limit: int) -> None:
    # Lengths are code points: a 4-byte UTF-8 character counts once.
    value = "\U0001f600" * limit
    assert getattr(parse(minimal(**{field: value})), field) == value


@pytest.mark.parametrize("field", sorted(STRING_FIELDS))
@pytest.mark.parametrize(
    "value",
    [
        "a b",
        "évènement",
        "ユーザー",
        "перевод",
        "模型-4",
        "\U0001f600",
        "\xa0",
        "\u2028",
        "a/b:c@d",
    ],
)
def test_string_unicode_accepted(field: str, value: str) -> None:
    assert getattr(parse(minimal(**{field: value})), field) == value


@pytest.mark.parametrize(("field", "limit"), sorted(INT_FIELDS.items()))
@pytest.mark.parametrize("position", ["zero", "max"])
def test_integer_bounds_accepted(field: str, limit: int, position: str) -> None:
    value = 0 if position == "zero" else limit
    assert getattr(parse(minimal(**{field: value})), field) == value


@pytest.mark.parametrize("value", [True, False])
def test_streamed_accepted(value: bool) -> None:
    assert parse(minimal(streamed=value)).streamed is value


def test_unknown_fields_ignored() -> None:
    event = parse(
        minimal(
            region="eu",
            reasoning_tokens=5,
            nested={"a": [1, 2.5, None, {"b": "c"}]},
            input_tokens_v2="not checked",
        )
    )
    assert event == parse(minimal())
    assert "region" not in event.model_dump()
    assert not hasattr(event, "region")
    assert event.model_extra is None


def test_model_is_frozen() -> None:
    event = parse(minimal())
    with pytest.raises(ValidationError) as info:
        event.input_tokens = 5  # type: ignore[misc]
    assert info.value.errors()[0]["type"] == "frozen_instance"


def test_python_construction_with_datetime() -> None:
    when = datetime(2024, 5, 1, 12, tzinfo=UTC)
    event = UsageEventV1(
        schema_version=1,
        event_id="e",
        occurred_at=when,
        provider="p",
        model="m",
        status="error",
        error_code="timeout",
    )
    assert event.occurred_at == when
    assert event.error_code == "timeout"


def test_json_round_trip() -> None:
    event = parse(minimal(input_tokens=3, streamed=True, scenario="ユーザー"))
    assert UsageEventV1.model_validate_json(event.model_dump_json()) == event


# --- rejected -----------------------------------------------------------------------------

REJECTED: list[Any] = [
    # schema_version: exactly the JSON integer 1
    pytest.param({"schema_version": 2}, [("literal_error", ("schema_version",))], id="v-2"),
    pytest.param({"schema_version": 0}, [("literal_error", ("schema_version",))], id="v-0"),
    pytest.param({"schema_version": -1}, [("literal_error", ("schema_version",))], id="v-neg"),
    pytest.param({"schema_version": 1.0}, [("int_type", ("schema_version",))], id="v-float"),
    pytest.param({"schema_version": True}, [("int_type", ("schema_version",))], id="v-true"),
    pytest.param({"schema_version": "1"}, [("int_type", ("schema_version",))], id="v-string"),
    pytest.param({"schema_version": None}, [("int_type", ("schema_version",))], id="v-null"),
    # event_id
    pytest.param({"event_id": ""}, [("string_too_short", ("event_id",))], id="id-empty"),
    pytest.param(
        {"event_id": "x" * (MAX_EVENT_ID_LENGTH + 1)},
        [("string_too_long", ("event_id",))],
        id="id-too-long",
    ),
    pytest.param({"event_id": 123}, [("string_type", ("event_id",))], id="id-number"),
    # provider / model must be non-empty
    pytest.param({"provider": ""}, [("string_too_short", ("provider",))], id="provider-empty"),
    pytest.param({"model": ""}, [("string_too_short", ("model",))], id="model-empty"),
    # status
    pytest.param({"status": "ok"}, [("literal_error", ("status",))], id="status-unknown"),
    pytest.param({"status": "SUCCESS"}, [("literal_error", ("status",))], id="status-case"),
    pytest.param({"status": "cancelled"}, [("literal_error", ("status",))], id="status-uk"),
    pytest.param({"status": ""}, [("literal_error", ("status",))], id="status-empty"),
    pytest.param({"status": 1}, [("literal_error", ("status",))], id="status-number"),
    # streamed: strict bool
    pytest.param({"streamed": 1}, [("bool_type", ("streamed",))], id="streamed-1"),
    pytest.param({"streamed": "true"}, [("bool_type", ("streamed",))], id="streamed-str"),
    pytest.param({"streamed": None}, [("bool_type", ("streamed",))], id="streamed-null"),
    # several errors are all reported, in field order
    pytest.param(
        {"provider": "", "input_tokens": -1, "streamed": "no"},
        [
            ("string_too_short", ("provider",)),
            ("greater_than_equal", ("input_tokens",)),
            ("bool_type", ("streamed",)),
        ],
        id="several",
    ),
]


@pytest.mark.parametrize(("overrides", "expected"), REJECTED)
def test_rejected(overrides: dict[str, Any], expected: list[tuple[str, tuple[str]]]) -> None:
    assert errors_of(minimal(**overrides)) == expected


@pytest.mark.parametrize("field", REQUIRED)
def test_required_field_missing(field: str) -> None:
    assert errors_of(without(field)) == [("missing", (field,))]


@pytest.mark.parametrize("field", REQUIRED)
def test_required_field_null(field: str) -> None:
    errors = errors_of(minimal(**{field: None}))
    assert len(errors) == 1
    assert errors[0][1] == (field,)


def test_empty_object_lists_every_required_field() -> None:
    assert errors_of({}) == [("missing", (field,)) for field in REQUIRED]


RFC3339 = "rfc3339_datetime"
RANGE = "occurred_at_out_of_range"


@pytest.mark.parametrize(
    ("value", "error_type"),
    [
        ("2024-05-01T12:00:00", RFC3339),  # naive: no offset
        ("2024-05-01T12:00:00.123", RFC3339),
        ("2024-05-01", RFC3339),
        ("2024-05-01T12:00Z", RFC3339),  # no seconds
        ("2024-05-01T12:00:00+0200", RFC3339),  # offset without colon
        ("2024-05-01T12:00:00+02", RFC3339),
        ("2024-05-01 12:00:00Z", RFC3339),  # space separator
        ("2024-05-01_12:00:00Z", RFC3339),
        ("20240501T120000Z", RFC3339),
        ("2024-05-01T12:00:00.Z", RFC3339),
        ("2024-05-01T12:00:00Z\n", RFC3339),
        (" 2024-05-01T12:00:00Z", RFC3339),
        ("2024-05-01T12:00:00 Z", RFC3339),
        ("\uff12024-05-01T12:00:00Z", RFC3339),  # fullwidth digit
        ("1714564800", RFC3339),  # unix time as a string
        ("", RFC3339),
        (1714564800, RFC3339),  # unix time as a number
        (1714564800.5, RFC3339),
        (None, RFC3339),
        (True, RFC3339),
        ("2024-13-01T12:00:00Z", "datetime_parsing"),
        ("2024-02-30T12:00:00Z", "datetime_parsing"),
        ("2024-05-01T24:00:00Z", "datetime_parsing"),
        ("2016-12-31T23:59:60Z", "datetime_parsing"),  # leap seconds are not representable
        ("2024-05-01T12:00:00+24:00", "datetime_parsing"),
        ("0001-01-01T00:00:00Z", RANGE),  # Go's zero time.Time
        ("1999-12-31T23:59:59.999999Z", RANGE),
        ("2000-01-01T00:30:00+01:00", RANGE),  # 1999 in UTC
        ("2100-01-01T00:00:00Z", RANGE),
        ("9999-12-31T23:59:59-23:59", RANGE),
    ],
)
def test_occurred_at_rejected(value: object, error_type: str) -> None:
    assert errors_of(minimal(occurred_at=value)) == [(error_type, ("occurred_at",))]


@pytest.mark.parametrize(("field", "limit"), sorted(STRING_FIELDS.items()))
def test_string_too_long(field: str, limit: int) -> None:
    assert errors_of(minimal(**{field: "a" * (limit + 1)})) == [("string_too_long", (field,))]


@pytest.mark.parametrize("field", sorted(STRING_FIELDS))
@pytest.mark.parametrize("value", [0, 1.5, True, ["a"], {"a": "b"}])
def test_string_not_coerced(field: str, value: object) -> None:
    assert errors_of(minimal(**{field: value})) == [("string_type", (field,))]


@pytest.mark.parametrize("field", OPTIONAL_STRINGS)
def test_optional_string_null_rejected(field: str) -> None:
    assert errors_of(minimal(**{field: None})) == [("string_type", (field,))]


@pytest.mark.parametrize("field", sorted(STRING_FIELDS))
@pytest.mark.parametrize("char", CONTROL_CHARS, ids=[f"U+{ord(c):04X}" for c in CONTROL_CHARS])
def test_string_control_character_rejected(field: str, char: str) -> None:
    for value in (char, f"a{char}", f"{char}a", f"a{char}b"):
        assert errors_of(minimal(**{field: value})) == [("string_pattern_mismatch", (field,))]


@pytest.mark.parametrize("field", sorted(INT_FIELDS))
@pytest.mark.parametrize(
    ("value", "error_type"),
    [
        (-1, "greater_than_equal"),
        (-(2**70), "greater_than_equal"),
        (2**70, "less_than_equal"),
        (1.0, "int_type"),
        (1.5, "int_type"),
        (float("nan"), "int_type"),
        (float("inf"), "int_type"),
        ("1", "int_type"),
        ("", "int_type"),
        (True, "int_type"),
        (False, "int_type"),
        (None, "int_type"),
        ([1], "int_type"),
    ],
)
def test_integer_rejected(field: str, value: object, error_type: str) -> None:
    assert errors_of(minimal(**{field: value})) == [(error_type, (field,))]


@pytest.mark.parametrize(("field", "limit"), sorted(INT_FIELDS.items()))
def test_integer_above_limit(field: str, limit: int) -> None:
    assert errors_of(minimal(**{field: limit + 1})) == [("less_than_equal", (field,))]


@pytest.mark.parametrize("literal", [b"1e2", b"1E0", b"10.0", b"-0.0"])
def test_integer_fields_reject_fraction_and_exponent(literal: bytes) -> None:
    payload = json.dumps(minimal()).encode()[:-1] + b', "input_tokens": ' + literal + b"}"
    with pytest.raises(ValidationError) as info:
        UsageEventV1.model_validate_json(payload)
    assert [(e["type"], e["loc"]) for e in info.value.errors()] == [("int_type", ("input_tokens",))]


# --- JSON Schema and checked-in artefacts ---------------------------------------------------


def test_checked_in_json_schema_is_current() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == json_schema_text(), (
        f"{SCHEMA_FILE} is stale: run `make schema` and commit the result"
    )


def test_python_m_schemas_prints_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "schemas"],
        capture_output=True,
        check=True,
        cwd=SCHEMAS_DIR.parent,
    )
    assert result.stdout.decode("utf-8") == json_schema_text()


def test_json_schema_text_is_canonical() -> None:
    text = json_schema_text()
    assert text.endswith("}\n")
    assert json.loads(text) == json_schema()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_json_schema_matches_model() -> None:
    schema = json_schema()
    fields = UsageEventV1.model_fields
    assert set(schema["properties"]) == set(fields)
    assert schema["required"] == [name for name, f in fields.items() if f.is_required()]
    assert schema["required"] == list(REQUIRED)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is True
    assert schema["$id"] == SCHEMA_ID
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "UsageEventV1"
    assert schema["description"]
    for name, prop in schema["properties"].items():
        assert prop.get("description"), f"{name} has no description"
        if name not in REQUIRED:
            assert prop["default"] == DEFAULTS[name]


def test_json_schema_constraints() -> None:
    props = json_schema()["properties"]
    assert props["schema_version"] == {
        "const": SCHEMA_VERSION,
        "type": "integer",
        "title": "Schema Version",
        "description": props["schema_version"]["description"],
    }
    assert props["status"]["enum"] == ["success", "error", "canceled"]
    assert props["occurred_at"]["format"] == "date-time"
    assert props["occurred_at"]["pattern"] == schemas.RFC3339_PATTERN
    assert props["streamed"]["type"] == "boolean"
    for name, limit in STRING_FIELDS.items():
        assert props[name]["type"] == "string"
        assert props[name]["maxLength"] == limit
        assert props[name]["pattern"] == schemas.NO_CONTROL_CHARS_PATTERN
        assert props[name].get("minLength") == (1 if name in NON_EMPTY_STRINGS else None)
    for name, limit in INT_FIELDS.items():
        assert props[name]["type"] == "integer"
        assert props[name]["minimum"] == 0
        assert props[name]["maximum"] == limit


def test_examples_present() -> None:
    names = {path.name for path in EXAMPLES}
    assert {
        "success-streamed-with-cache.json",
        "error-with-code.json",
        "canceled-minimal.json",
        "with-unknown-fields.json",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_is_valid(path: Path) -> None:
    raw = path.read_bytes()
    event = UsageEventV1.model_validate_json(raw)
    document = json.loads(raw)
    known = {k: v for k, v in document.items() if k in UsageEventV1.model_fields}
    dumped = event.model_dump(mode="json", include=set(known) - {"occurred_at"})
    assert dumped == {k: v for k, v in known.items() if k != "occurred_at"}


def test_example_with_unknown_fields_has_some() -> None:
    document = json.loads((SCHEMAS_DIR / "examples" / "with-unknown-fields.json").read_bytes())
    assert set(document) - set(UsageEventV1.model_fields)


def test_public_api() -> None:
    assert set(schemas.__all__) == {name for name in dir(schemas) if not name.startswith("_")} - {
        "usage_event"
    }
    assert SCHEMA_VERSION == 1
    assert MAX_TOKENS == 10_000_000
    assert MAX_LATENCY_MS == 86_400_000
