"""The shared test vectors (schemas/vectors/): one wire format, two languages.

The Go publisher's tests (clients/go/usageevents) assert that it writes exactly each accept
vector's bytes and key, and drops each reject vector that has options. These tests assert the
other side: the worker's decoders accept or reject each vector exactly so, the key is the
worker's own definition, and recording the accepted events gives the expected series.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from consumer.keys.attributes import attribute_key
from consumer.pipeline.validate import FastUsageEvent, Reason, Rejection, decode, decode_fast
from consumer.usage.options import MAX_ERROR_CODE_BYTES, UsageOptions, truncate_utf8
from consumer.usage.provider import METER_NAME, build_meter_provider
from consumer.usage.tracker import TokenTracker
from schemas import UsageEventV1
from tests.harness import Series, expected_series, parse_exposition, usage_series

VECTORS = Path(__file__).resolve().parents[1] / "schemas" / "vectors"
MAX_BYTES = 65_536  # the worker's default max_message_bytes

# The Go publisher's UsageOptions fields (the gateway's, field for field) and their event fields.
GO_FIELDS = {
    "Operation": "operation",
    "Provider": "provider",
    "ProviderUUID": "provider_uuid",
    "Model": "model",
    "RequestModel": "request_model",
    "RuleUUID": "rule_uuid",
    "Scenario": "scenario",
    "InputTokens": "input_tokens",
    "OutputTokens": "output_tokens",
    "CacheReadTokens": "cache_read_tokens",
    "CacheWriteTokens": "cache_write_tokens",
    "SystemTokens": "system_tokens",
    "Streamed": "streamed",
    "Status": "status",
    "ErrorCode": "error_code",
    "LatencyMs": "latency_ms",
    "UserTier": "user_tier",
}


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return loaded


ACCEPT = _load("accept.json")
REJECT = _load("reject.json")
FIXED = {"event_id": ACCEPT["event_id"], "occurred_at": ACCEPT["occurred_at"]}


def _value(case: dict[str, Any]) -> bytes:
    if "value_hex" in case:
        return bytes.fromhex(case["value_hex"])
    return str(case["value"]).encode("utf-8")


def _series(rows: list[dict[str, Any]]) -> Series:
    return {(row["name"], frozenset(row["labels"].items())): float(row["value"]) for row in rows}


def _recorded(events: list[Any]) -> Series:
    """What the worker's tracker and exporter make of these decoded events."""
    registry = CollectorRegistry(auto_describe=True)
    provider = build_meter_provider(registry, 10_000)
    try:
        TokenTracker(provider.get_meter(METER_NAME)).record_batch(events)
        return usage_series(parse_exposition(generate_latest(registry).decode()))
    finally:
        provider.shutdown()


def test_the_files_agree() -> None:
    assert {"event_id": REJECT["event_id"], "occurred_at": REJECT["occurred_at"]} == FIXED
    names = [c["name"] for c in ACCEPT["cases"] + REJECT["cases"]]
    assert len(names) == len(set(names))
    assert len(ACCEPT["cases"]) == 14
    assert len(REJECT["cases"]) == 27
    # The options are the Go UsageOptions' fields, which are the worker's UsageOptions' fields
    # but for the seed's name of cache reads.
    python_fields = {f.name for f in dataclasses.fields(UsageOptions)} - {"cache_input_tokens"}
    assert set(GO_FIELDS.values()) == python_fields
    for case in ACCEPT["cases"] + REJECT["cases"]:
        assert set(case.get("options", {})) <= set(GO_FIELDS), case["name"]


@pytest.mark.parametrize("case", ACCEPT["cases"], ids=lambda c: c["name"])
def test_accepted_exactly_so(case: dict[str, Any]) -> None:
    value = _value(case)
    sent = json.loads(value)
    assert sent == {**case["event"], **FIXED}
    # The options, field by field, are what the event carries (the error code cut as written).
    options = case["options"]
    for go_name, field in GO_FIELDS.items():
        default = UsageOptions.__dataclass_fields__[field].default
        want = options.get(go_name, default)
        if field == "error_code":
            want = truncate_utf8(want, MAX_ERROR_CODE_BYTES)
        assert sent.get(field, default) == want, field

    model = decode(value, MAX_BYTES)
    fast = decode_fast(value, MAX_BYTES)
    assert isinstance(model, UsageEventV1)
    assert isinstance(fast, FastUsageEvent)  # the publisher stays on the worker's fast path
    for field in GO_FIELDS.values():
        assert (
            getattr(fast, field) == getattr(model, field) == sent.get(field, getattr(model, field))
        )
    assert model.event_id == FIXED["event_id"]
    assert model.occurred_at.isoformat() == "2026-05-01T12:34:56.789012+00:00"

    assert attribute_key(sent) == case["key"].encode("ascii")

    want = _series(case["series"])
    assert expected_series([sent]) == want  # the test oracle agrees with the vector
    assert _recorded([model]) == want
    assert _recorded([fast]) == want


def test_all_accepted_together() -> None:
    events = [decode_fast(_value(c), MAX_BYTES) for c in ACCEPT["cases"]]
    sent = [json.loads(_value(c)) for c in ACCEPT["cases"]]
    want = expected_series(sent)
    assert _recorded(events) == want
    assert sum(v for (name, _), v in want.items() if name == "llm_request_count_total") == 14


@pytest.mark.parametrize("case", REJECT["cases"], ids=lambda c: c["name"])
def test_rejected_exactly_so(case: dict[str, Any]) -> None:
    value = _value(case)
    reason = Reason(case["reason"])
    for decoder in (decode, decode_fast):
        verdict = decoder(value, MAX_BYTES)
        assert isinstance(verdict, Rejection), decoder.__name__
        assert verdict.reason is reason, (decoder.__name__, verdict.detail)
    if "options" in case:
        # What the Go publisher would write for these options, were it not to drop them: every
        # option is in it, under its event field (its Go test asserts the exact bytes).
        sent = json.loads(value)
        assert {k: v for k, v in sent.items() if k not in FIXED} == {
            "schema_version": 1,
            "provider": "",
            "model": "",
            "status": "",
            **{GO_FIELDS[k]: v for k, v in case["options"].items()},
        }


def test_reasons_covered() -> None:
    """Every reason the default decoder gives, except too_large (a size, not a format)."""
    assert {Reason(c["reason"]) for c in REJECT["cases"]} == {
        Reason.EMPTY,
        Reason.NOT_UTF8,
        Reason.INVALID_JSON,
        Reason.NOT_AN_OBJECT,
        Reason.UNSUPPORTED_SCHEMA_VERSION,
        Reason.SCHEMA_VIOLATION,
        Reason.CACHE_TOKENS_CONFLICT,
    }
