"""consumer.pipeline.validate.decode: bytes -> UsageEventV1 | Rejection, and never an exception."""

import codecs
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.pipeline.validate import (
    MAX_DETAIL_LENGTH,
    MAX_LISTED_ERRORS,
    Reason,
    Rejection,
    decode,
    decode_fast,
    known_as,
    unknown_fields,
)
from schemas import (
    MAX_ERROR_CODE_LENGTH,
    MAX_EVENT_ID_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_LATENCY_MS,
    MAX_MODEL_LENGTH,
    MAX_TOKENS,
    UsageEventV1,
)

LIMIT = 64 * 1024
BASE: dict[str, Any] = {
    "schema_version": 1,
    "event_id": "evt-1",
    "occurred_at": "2024-05-01T12:00:00Z",
    "provider": "openai",
    "model": "gpt-4o",
    "status": "success",
}
BASE_JSON = json.dumps(BASE).encode()


def event(**overrides: Any) -> bytes:
    return json.dumps({**BASE, **overrides}).encode()


def with_raw(field: str, raw: bytes) -> bytes:
    """BASE plus one member whose value is spliced in verbatim (may be invalid JSON)."""
    return BASE_JSON[:-1] + b', "' + field.encode() + b'": ' + raw + b"}"


def rejected(value: bytes | None, max_bytes: int = LIMIT) -> Rejection:
    outcome = decode(value, max_bytes)
    assert isinstance(outcome, Rejection), outcome
    assert_safe_detail(outcome.detail)
    return outcome


def accepted(value: bytes, max_bytes: int = LIMIT) -> UsageEventV1:
    outcome = decode(value, max_bytes)
    assert isinstance(outcome, UsageEventV1), outcome
    return outcome


def assert_safe_detail(detail: str) -> None:
    assert detail
    assert len(detail) <= MAX_DETAIL_LENGTH
    assert detail.isascii()
    assert detail.isprintable()


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --- the happy path -----------------------------------------------------------------------


def test_valid_event() -> None:
    got = accepted(event(input_tokens=12, streamed=True))
    assert got.event_id == "evt-1"
    assert got.input_tokens == 12
    assert got.streamed is True
    assert got.occurred_at == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_valid_event_with_raw_utf8() -> None:
    raw = json.dumps({**BASE, "model": "模型-é-😀"}, ensure_ascii=False).encode()
    assert accepted(raw).model == "模型-é-😀"


def test_synthetic_events_are_valid() -> None:
    from consumer.devtools.produce import synthetic_events  # noqa: PLC0415 - only this test needs it

    for item in synthetic_events(200):
        accepted(json.dumps(item).encode())


# --- EMPTY and TOO_LARGE ------------------------------------------------------------------


def test_none_is_empty() -> None:
    assert rejected(None) == Rejection(Reason.EMPTY, "message value is null (tombstone)")


def test_empty_bytes_is_empty() -> None:
    assert rejected(b"") == Rejection(Reason.EMPTY, "message value is empty")


@pytest.mark.parametrize("value", [b" ", b"\n", b"\t \r\n"])
def test_whitespace_only_is_invalid_json(value: bytes) -> None:
    assert rejected(value).reason is Reason.INVALID_JSON


def test_size_limit_boundary() -> None:
    value = BASE_JSON
    assert accepted(value, max_bytes=len(value))
    assert rejected(value, max_bytes=len(value) - 1) == Rejection(
        Reason.TOO_LARGE, f"message value is {len(value)} bytes, limit is {len(value) - 1}"
    )


def test_size_limit_boundary_padded() -> None:
    # Exactly max_bytes is accepted, max_bytes + 1 is not; trailing whitespace is valid JSON.
    padded = BASE_JSON + b" " * (LIMIT - len(BASE_JSON))
    assert len(padded) == LIMIT
    accepted(padded)
    assert rejected(padded + b" ").reason is Reason.TOO_LARGE


def test_too_large_is_not_parsed() -> None:
    # Garbage beyond the limit is TOO_LARGE, not INVALID_JSON/NOT_UTF8: nothing is parsed.
    assert rejected(b"\xff" * (LIMIT + 1)).reason is Reason.TOO_LARGE
    assert rejected(b"{" * (LIMIT + 1)).reason is Reason.TOO_LARGE


# --- NOT_UTF8 -------------------------------------------------------------------------------

NOT_UTF8: list[Any] = [
    pytest.param(with_raw("model_x", b'"a\xffb"'), id="in-unknown-field"),
    pytest.param(BASE_JSON.replace(b'"gpt-4o"', b'"gpt\xff"'), id="in-known-field"),
    pytest.param(BASE_JSON[:-1] + b', "k\xff": 1}', id="in-key"),
    pytest.param(BASE_JSON + b"\xff", id="after-the-object"),
    pytest.param(b'\xff\xfe{"schema_version": 1}', id="utf16-bom"),
    pytest.param('{"schema_version": "é"}'.encode("utf-16-le"), id="utf16-non-ascii"),
    pytest.param(with_raw("x", '"é"'.encode("latin-1")), id="latin-1"),
    pytest.param(with_raw("x", b'"\xc0\xaf"'), id="overlong"),
    pytest.param(with_raw("x", b'"\xed\xa0\x80"'), id="utf8-encoded-surrogate"),
    pytest.param(with_raw("x", b'"\xf4\x90\x80\x80"'), id="above-U+10FFFF"),
    pytest.param(with_raw("x", b'"\xe6\xa8"'), id="truncated-sequence"),
    pytest.param(b'{"schema_version": 1, \xff', id="also-bad-json"),
]


@pytest.mark.parametrize("value", NOT_UTF8)
def test_not_utf8(value: bytes) -> None:
    outcome = rejected(value)
    assert outcome.reason is Reason.NOT_UTF8
    assert outcome.detail.startswith("invalid UTF-8 at byte offset ")


def test_not_utf8_detail() -> None:
    value = with_raw("x", b'"\xff"')
    offset = value.index(b"\xff")
    assert rejected(value).detail == f"invalid UTF-8 at byte offset {offset}: invalid start byte"


# --- INVALID_JSON ---------------------------------------------------------------------------

INVALID_JSON: list[Any] = [
    pytest.param(b"{", id="unterminated"),
    pytest.param(BASE_JSON[:-1], id="truncated"),
    pytest.param(b'{"schema_version": 1,}', id="trailing-comma"),
    pytest.param(b"{'schema_version': 1}", id="single-quotes"),
    pytest.param(b"{schema_version: 1}", id="bare-key"),
    pytest.param(BASE_JSON + b"x", id="trailing-garbage"),
    pytest.param(BASE_JSON + BASE_JSON, id="two-objects"),
    pytest.param(BASE_JSON + b"\n" + BASE_JSON, id="two-lines"),
    pytest.param(with_raw("x", b"nan"), id="lowercase-nan"),
    pytest.param(with_raw("x", b"01"), id="leading-zero"),
    pytest.param(with_raw("x", b"+1"), id="plus-sign"),
    pytest.param(with_raw("x", b"0x10"), id="hex"),
    pytest.param(with_raw("x", b'"\\ud800"'), id="lone-high-surrogate"),
    pytest.param(with_raw("x", b'"\\udc00"'), id="lone-low-surrogate"),
    pytest.param(with_raw("x", b'"\\ud800\\u0041"'), id="high-surrogate-then-bmp"),
    pytest.param(BASE_JSON.replace(b'"gpt-4o"', b'"gpt\\ud800"'), id="surrogate-in-known"),
    pytest.param(with_raw("x", b'"\\x41"'), id="bad-escape"),
    pytest.param(with_raw("x", b'"a\x00b"'), id="raw-nul-in-string"),
    pytest.param(with_raw("x", b'"a\nb"'), id="raw-newline-in-string"),
    pytest.param(with_raw("x", b"9" * 4301), id="integer-over-4300-digits"),
    pytest.param(with_raw("input_tokens", b"9" * 5000), id="huge-integer-known"),
    pytest.param(b"\x00", id="nul"),
    # UTF-16 of ASCII text is valid UTF-8 (NUL bytes), just not JSON.
    pytest.param('{"schema_version": 1}'.encode("utf-16-le"), id="utf16-ascii"),
    pytest.param(b"// comment\n" + BASE_JSON, id="comment"),
]


@pytest.mark.parametrize("value", INVALID_JSON)
def test_invalid_json(value: bytes) -> None:
    outcome = rejected(value)
    assert outcome.reason is Reason.INVALID_JSON
    assert outcome.detail.startswith("Invalid JSON: ")
    assert " at line " in outcome.detail


def test_invalid_json_detail() -> None:
    assert rejected(BASE_JSON + b"x") == Rejection(
        Reason.INVALID_JSON,
        f"Invalid JSON: trailing characters at line 1 column {len(BASE_JSON) + 1}",
    )


def test_utf8_bom_is_invalid_json() -> None:
    outcome = rejected(codecs.BOM_UTF8 + BASE_JSON)
    assert outcome == Rejection(
        Reason.INVALID_JSON,
        "starts with a UTF-8 byte order mark, which is not allowed"
        " (Invalid JSON: expected value at line 1 column 1)",
    )


@pytest.mark.parametrize("depth", [202, 1_000, 10_000, 100_000])
def test_deep_nesting_is_invalid_json_without_crashing(depth: int) -> None:
    for value in (nested(depth), b"[" * depth, with_raw("x", nested(depth))):
        outcome = rejected(value, max_bytes=10 * depth + len(BASE_JSON))
        assert outcome.reason is Reason.INVALID_JSON
        assert "recursion limit exceeded" in outcome.detail


def test_deep_nesting_of_objects() -> None:
    value = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    outcome = rejected(value, max_bytes=len(value))
    assert outcome.reason is Reason.INVALID_JSON
    assert "recursion limit exceeded" in outcome.detail


def test_nesting_up_to_201_levels_is_fine_in_unknown_fields() -> None:
    # The event object is level 1, so the unknown field can hold 200 more.
    accepted(with_raw("x", nested(200)))
    assert rejected(with_raw("x", nested(201))).reason is Reason.INVALID_JSON
    assert rejected(nested(201)).reason is Reason.NOT_AN_OBJECT
    assert rejected(nested(202)).reason is Reason.INVALID_JSON


# --- NOT_AN_OBJECT --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (b"[]", "an array"),
        (b"[" + BASE_JSON + b"]", "an array"),
        (b'"evt"', "a string"),
        (json.dumps(BASE_JSON.decode()).encode(), "a string"),  # double-encoded event
        (b"1", "a number"),
        (b"-1.5e3", "a number"),
        (b"NaN", "a number"),
        (b"true", "a boolean"),
        (b"false", "a boolean"),
        (b"null", "null"),
        (b"  null \n", "null"),
    ],
)
def test_not_an_object(value: bytes, kind: str) -> None:
    assert rejected(value) == Rejection(
        Reason.NOT_AN_OBJECT, f"top-level JSON value is {kind}, expected an object"
    )


# --- UNSUPPORTED_SCHEMA_VERSION -------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 2, 3, -1, 100])
def test_unsupported_schema_version(version: int) -> None:
    assert rejected(event(schema_version=version)) == Rejection(
        Reason.UNSUPPORTED_SCHEMA_VERSION,
        f"schema_version {version} is not supported (this consumer understands 1)",
    )


def test_unsupported_schema_version_wins_over_other_errors() -> None:
    # A v2 event may have different fields: don't blame it for not being v1.
    outcome = rejected(json.dumps({"schema_version": 2, "usage": {"in": 1}}).encode())
    assert outcome.reason is Reason.UNSUPPORTED_SCHEMA_VERSION
    outcome = rejected(event(schema_version=7, input_tokens="x", model=""))
    assert outcome.reason is Reason.UNSUPPORTED_SCHEMA_VERSION


def test_unsupported_huge_schema_version() -> None:
    outcome = rejected(with_raw("schema_version", b"9" * 4000))
    assert outcome.reason is Reason.UNSUPPORTED_SCHEMA_VERSION
    bits = (10**4000 - 1).bit_length()
    assert outcome.detail.startswith(f"schema_version <{bits}-bit integer> is not supported")


@pytest.mark.parametrize(
    ("raw", "got"),
    [
        (b'"1"', "'1'"),
        (b'"2"', "'2'"),
        (b"1.0", "1.0"),
        (b"2.0", "2.0"),
        (b"true", "true"),
        (b"null", "null"),
        (b"[1]", None),
    ],
)
def test_non_integer_schema_version_is_a_violation(raw: bytes, got: str | None) -> None:
    outcome = rejected(with_raw("schema_version", raw))
    assert outcome.reason is Reason.SCHEMA_VIOLATION
    suffix = f" (got {got})" if got else ""
    assert outcome.detail == f"schema_version: Input should be a valid integer{suffix}"


def test_missing_schema_version_is_a_violation() -> None:
    value = json.dumps({k: v for k, v in BASE.items() if k != "schema_version"}).encode()
    assert rejected(value) == Rejection(Reason.SCHEMA_VIOLATION, "schema_version: Field required")


# --- SCHEMA_VIOLATION -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (event(input_tokens="12"), "input_tokens: Input should be a valid integer (got '12')"),
        (event(input_tokens=1.0), "input_tokens: Input should be a valid integer (got 1.0)"),
        (event(input_tokens=True), "input_tokens: Input should be a valid integer (got true)"),
        (
            event(input_tokens=-1),
            "input_tokens: Input should be greater than or equal to 0 (got -1)",
        ),
        (
            event(latency_ms=MAX_LATENCY_MS + 1),
            f"latency_ms: Input should be less than or equal to {MAX_LATENCY_MS}"
            f" (got {MAX_LATENCY_MS + 1})",
        ),
        (
            event(status="ok"),
            "status: Input should be 'success', 'error' or 'canceled' (got 'ok')",
        ),
        (event(streamed="yes"), "streamed: Input should be a valid boolean (got 'yes')"),
        (event(provider=5), "provider: Input should be a valid string (got 5)"),
        (event(provider=[]), "provider: Input should be a valid string"),
        (event(model=""), "model: String should have at least 1 character (got '')"),
        (
            event(scenario="a\x1bb"),
            "scenario: String should not contain control characters"
            " (U+0000-U+001F, U+007F-U+009F) (got 'a\\x1bb')",
        ),
        (
            event(user_tier="\x85"),
            "user_tier: String should not contain control characters"
            " (U+0000-U+001F, U+007F-U+009F) (got '\\x85')",
        ),
        (
            event(occurred_at="2024-05-01T12:00:00"),
            "occurred_at: Input should be an RFC 3339 date-time with a time zone offset,"
            " e.g. 2024-05-01T12:34:56.789Z (got '2024-05-01T12:00:00')",
        ),
        (
            event(occurred_at="0001-01-01T00:00:00Z"),
            "occurred_at: Input should be at or after 2000-01-01T00:00:00Z and before"
            " 2100-01-01T00:00:00Z (got '0001-01-01T00:00:00Z')",
        ),
        (
            event(occurred_at="2024-02-30T00:00:00Z"),
            "occurred_at: Input should be a valid datetime, day is out of range for month"
            " (got '2024-02-30T00:00:00Z')",
        ),
        (
            with_raw("input_tokens", b"NaN"),
            "input_tokens: Input should be a valid integer (got nan)",
        ),
        (
            with_raw("output_tokens", b"-Infinity"),
            "output_tokens: Input should be a valid integer (got -inf)",
        ),
        (
            with_raw("input_tokens", b"1e400"),
            "input_tokens: Input should be a valid integer (got inf)",
        ),
        (
            with_raw("input_tokens", b"9" * 4300),
            "input_tokens: Input should be less than or equal to 10000000"
            f" (got <{(10**4300 - 1).bit_length()}-bit integer>)",
        ),
        (
            with_raw("provider", b'"\\u0000"'),
            "provider: String should not contain control characters"
            " (U+0000-U+001F, U+007F-U+009F) (got '\\x00')",
        ),
    ],
)
def test_schema_violation_detail(value: bytes, detail: str) -> None:
    assert rejected(value) == Rejection(Reason.SCHEMA_VIOLATION, detail)


def test_schema_violation_lists_first_errors_in_field_order() -> None:
    value = json.dumps({"schema_version": 1, "input_tokens": "x"}).encode()
    outcome = rejected(value)
    assert outcome.reason is Reason.SCHEMA_VIOLATION
    # 5 required fields missing + input_tokens, first MAX_LISTED_ERRORS listed.
    assert MAX_LISTED_ERRORS == 3
    assert outcome.detail == (
        "event_id: Field required; occurred_at: Field required; provider: Field required (+3 more)"
    )


def test_schema_violation_missing_field_detail() -> None:
    value = json.dumps({k: v for k, v in BASE.items() if k != "model"}).encode()
    assert rejected(value) == Rejection(Reason.SCHEMA_VIOLATION, "model: Field required")


def test_empty_object_is_a_violation() -> None:
    outcome = rejected(b"{}")
    assert outcome.reason is Reason.SCHEMA_VIOLATION
    assert outcome.detail.endswith(" (+3 more)")


def test_hostile_values_are_escaped_and_clipped() -> None:
    hostile = "\x1b[31m\u202e" + "é" * 1000
    outcome = rejected(event(event_id=hostile, provider=hostile, model=hostile, scenario=hostile))
    assert outcome.reason is Reason.SCHEMA_VIOLATION
    assert outcome.detail.startswith(
        "event_id: String should have at most 128 characters (got '\\x1b[31m\\u202e\\xe9"
    )
    assert "é" not in outcome.detail
    assert "\x1b" not in outcome.detail
    assert hostile[:200] not in outcome.detail


def test_detail_is_clipped_to_limit() -> None:
    long_key = "k" * 5000
    outcome = rejected(json.dumps({long_key: 1, "schema_version": 1, "event_id": ""}).encode())
    assert len(outcome.detail) <= MAX_DETAIL_LENGTH


@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("event_id", MAX_EVENT_ID_LENGTH),
        ("provider", MAX_LABEL_LENGTH),
        ("model", MAX_MODEL_LENGTH),
        ("error_code", MAX_ERROR_CODE_LENGTH),
    ],
)
def test_string_limits_apply(field: str, limit: int) -> None:
    accepted(event(**{field: "x" * limit}))
    outcome = rejected(event(**{field: "x" * (limit + 1)}))
    assert outcome.reason is Reason.SCHEMA_VIOLATION
    assert outcome.detail.startswith(f"{field}: String should have at most {limit} characters")


# --- documented parser behaviours that are *accepted* ---------------------------------------


def test_duplicate_keys_last_wins() -> None:
    assert accepted(with_raw("input_tokens", b"1")[:-1] + b', "input_tokens": 2}').input_tokens == 2
    assert accepted(with_raw("model", b'"second"')).model == "second"


def test_duplicate_schema_version_last_wins() -> None:
    assert accepted(b'{"schema_version": 2, ' + BASE_JSON[1:]).schema_version == 1
    value = BASE_JSON[:-1] + b', "schema_version": 2}'
    assert rejected(value).reason is Reason.UNSUPPORTED_SCHEMA_VERSION


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"9" * 4300])
def test_odd_numbers_in_unknown_fields_are_ignored(raw: bytes) -> None:
    assert accepted(with_raw("x", raw)) == accepted(BASE_JSON)


def test_escaped_control_characters_in_unknown_fields_are_ignored() -> None:
    assert accepted(with_raw("x", b'"\\u0000\\u001b\\u0085"')) == accepted(BASE_JSON)


def test_valid_surrogate_pair_escape() -> None:
    assert accepted(with_raw("model", b'"\\ud83d\\ude00"')).model == "\U0001f600"


@pytest.mark.parametrize("suffix", [b" ", b"\n", b"\r\n", b"\t", b" \n\n "])
def test_trailing_whitespace_is_fine(suffix: bytes) -> None:
    accepted(BASE_JSON + suffix)
    accepted(suffix + BASE_JSON)


def test_unknown_fields_ignored() -> None:
    got = accepted(event(future_field={"a": [1, None]}, reasoning_tokens=5))
    assert got == accepted(BASE_JSON)


def test_unknown_fields_rejected_when_asked_naming_what_they_likely_mean() -> None:
    value = event(inputTokens=12, output_tokens=3, x_trace="t")
    assert decode(value, 65536, "reject") == Rejection(
        Reason.UNKNOWN_FIELD, "unknown fields: inputTokens (did you mean input_tokens?), x_trace"
    )
    assert decode_fast(value, 65536, "reject") == decode(value, 65536, "reject")
    assert unknown_fields(value) == ["inputTokens", "x_trace"]
    assert [known_as(n) for n in ("inputTokens", "INPUT-TOKENS", "Model", "x_trace")] == [
        "input_tokens",
        "input_tokens",
        "model",
        None,
    ]
    # Ignored (the default): accepted with the known fields only.
    assert accepted(value) == accepted(event(output_tokens=3))


def test_reason_values_are_stable() -> None:
    assert [reason.value for reason in Reason] == [
        "empty",
        "too_large",
        "not_utf8",
        "invalid_json",
        "not_an_object",
        "unsupported_schema_version",
        "schema_violation",
        "cache_tokens_conflict",
        "unknown_field",
    ]
    assert f"{Reason.NOT_UTF8}" == "not_utf8"


# --- cache_read_tokens and cache_input_tokens: one quantity, two names ----------------------------


@pytest.mark.parametrize(
    ("sent", "value"),
    [
        ({"cache_read_tokens": 700}, 700),
        ({"cache_input_tokens": 700}, 700),
        ({"cache_read_tokens": 700, "cache_input_tokens": 700}, 700),
        ({"cache_read_tokens": 0, "cache_input_tokens": 0}, 0),
        ({}, 0),
    ],
)
def test_either_name_of_the_cache_reads_is_accepted_and_both_hold_it(
    sent: dict[str, int], value: int
) -> None:
    for decoder in (decode, decode_fast):
        got = decoder(event(**sent), LIMIT)
        assert not isinstance(got, Rejection), got
        assert (got.cache_read_tokens, got.cache_input_tokens) == (value, value)


@pytest.mark.parametrize(
    ("read", "seed"),
    [(700, 699), (700, 0), (0, 700)],
)
def test_both_names_of_the_cache_reads_with_different_values_are_a_conflict(
    read: int, seed: int
) -> None:
    value = event(cache_read_tokens=read, cache_input_tokens=seed)
    expected = Rejection(
        Reason.CACHE_TOKENS_CONFLICT,
        f"cache_read_tokens ({read}) and cache_input_tokens ({seed}) name the same quantity and"
        " must agree when both are sent",
    )
    assert decode(value, LIMIT) == expected
    assert decode_fast(value, LIMIT) == expected


def test_a_field_error_wins_over_a_cache_conflict() -> None:
    got = rejected(event(cache_read_tokens=1, cache_input_tokens=2, input_tokens="3"))
    assert got.reason is Reason.SCHEMA_VIOLATION


def test_rejection_is_frozen() -> None:
    outcome = Rejection(Reason.EMPTY, "x")
    with pytest.raises(AttributeError):
        outcome.detail = "y"  # type: ignore[misc]


# --- property tests -------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
# Known field names are worth more than random ones: they reach the field validators.
field_names = st.sampled_from(sorted(UsageEventV1.model_fields)) | st.text(max_size=10)


def check_outcome(value: bytes, max_bytes: int = LIMIT) -> UsageEventV1 | Rejection:
    outcome = decode(value, max_bytes)
    assert isinstance(outcome, UsageEventV1 | Rejection)
    if isinstance(outcome, Rejection):
        assert isinstance(outcome.reason, Reason)
        assert_safe_detail(outcome.detail)
    else:
        value.decode("utf-8")  # only valid UTF-8 is ever accepted
        for name in UsageEventV1.model_fields:
            field_value = getattr(outcome, name)
            if isinstance(field_value, str):
                field_value.encode("utf-8")  # no lone surrogates
    return outcome


@given(st.binary(max_size=512))
@settings(max_examples=500, deadline=None)
def test_fuzz_arbitrary_bytes(value: bytes) -> None:
    check_outcome(value)


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=80))
@settings(deadline=None)
def test_fuzz_small_limits(value: bytes, max_bytes: int) -> None:
    outcome = check_outcome(value, max_bytes)
    if len(value) > max_bytes:
        assert isinstance(outcome, Rejection)
        assert outcome.reason is Reason.TOO_LARGE


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=len(BASE_JSON)))
@settings(deadline=None)
def test_fuzz_bytes_spliced_into_valid_event(junk: bytes, at: int) -> None:
    check_outcome(BASE_JSON[:at] + junk + BASE_JSON[at:])


@given(json_values, st.booleans())
@settings(max_examples=300, deadline=None)
def test_fuzz_arbitrary_json(value: Any, ascii_only: bool) -> None:
    check_outcome(json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))


@given(st.dictionaries(field_names, json_values, max_size=8))
@settings(max_examples=300, deadline=None)
def test_fuzz_event_like_objects(overrides: dict[str, Any]) -> None:
    outcome = check_outcome(json.dumps({**BASE, **overrides}).encode())
    if isinstance(outcome, Rejection):
        assert outcome.reason in {Reason.SCHEMA_VIOLATION, Reason.UNSUPPORTED_SCHEMA_VERSION}


# Strings valid in every field: no control characters (Cc) and no surrogates (Cs).
def label_text(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(
        st.characters(exclude_categories=("Cc", "Cs")), min_size=min_size, max_size=max_size
    )


offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# A day of margin on both ends, so any offset keeps the instant inside the accepted window.
instants = st.datetimes(
    min_value=datetime(2000, 1, 2),  # naive: hypothesis wants naive bounds
    max_value=datetime(2099, 12, 30),
)
token_counts = st.integers(min_value=0, max_value=MAX_TOKENS)


@st.composite
def valid_events(draw: st.DrawFn) -> tuple[dict[str, Any], datetime]:
    occurred_at = draw(instants).replace(tzinfo=draw(offsets))
    text = occurred_at.isoformat()
    if occurred_at.utcoffset() == timedelta(0) and draw(st.booleans()):
        text = text.replace("+00:00", "Z")
    payload: dict[str, Any] = {
        "schema_version": 1,
        "event_id": draw(label_text(1, MAX_EVENT_ID_LENGTH)),
        "occurred_at": text,
        "provider": draw(label_text(1, MAX_LABEL_LENGTH)),
        "model": draw(label_text(1, MAX_MODEL_LENGTH)),
        "status": draw(st.sampled_from(["success", "error", "canceled"])),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "provider_uuid": label_text(0, MAX_LABEL_LENGTH),
        "request_model": label_text(0, MAX_MODEL_LENGTH),
        "rule_uuid": label_text(0, MAX_LABEL_LENGTH),
        "scenario": label_text(0, MAX_LABEL_LENGTH),
        "error_code": label_text(0, MAX_ERROR_CODE_LENGTH),
        "user_tier": label_text(0, MAX_LABEL_LENGTH),
        "input_tokens": token_counts,
        "output_tokens": token_counts,
        "cache_read_tokens": token_counts,
        "cache_write_tokens": token_counts,
        "system_tokens": token_counts,
        "operation": label_text(0, MAX_LABEL_LENGTH),
        "latency_ms": st.integers(min_value=0, max_value=MAX_LATENCY_MS),
        "streamed": st.booleans(),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            payload[name] = draw(strategy)
    if "cache_read_tokens" in payload and draw(st.booleans()):  # the seed's name, agreeing
        payload["cache_input_tokens"] = payload["cache_read_tokens"]
        if draw(st.booleans()):
            del payload["cache_read_tokens"]
    return payload, occurred_at


@given(valid_events(), st.booleans())
@settings(max_examples=300, deadline=None)
def test_valid_events_round_trip(
    generated: tuple[dict[str, Any], datetime], ascii_only: bool
) -> None:
    payload, occurred_at = generated
    got = check_outcome(json.dumps(payload, ensure_ascii=ascii_only).encode())
    assert isinstance(got, UsageEventV1), got
    dumped = got.model_dump()
    assert dumped["occurred_at"] == occurred_at
    assert got.occurred_at.utcoffset() == occurred_at.utcoffset()
    for name, value in payload.items():
        if name != "occurred_at":
            assert dumped[name] == value, name
    cache_reads = payload.get("cache_read_tokens", payload.get("cache_input_tokens", 0))
    for name, field in UsageEventV1.model_fields.items():
        if name in ("cache_read_tokens", "cache_input_tokens"):
            assert dumped[name] == cache_reads, name
        elif name not in payload:
            assert dumped[name] == field.default, name
    # And back: the model's own JSON is accepted and equal.
    assert accepted(got.model_dump_json().encode()) == got
