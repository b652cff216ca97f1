"""The fast decoder agrees with the model: same verdict, same values, on every input tried."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.devtools.produce import synthetic_events
from consumer.pipeline.validate import FastUsageEvent, Rejection, decode, decode_fast
from schemas import UsageEventV1
from schemas.usage_event import parse_rfc3339
from tests.test_hostile import CORPUS, Entry

MAX = 65_536
FIELDS = [name for name in UsageEventV1.model_fields if name != "occurred_at"]


def assert_same_verdict(value: bytes | None) -> None:
    slow = decode(value, MAX)
    fast = decode_fast(value, MAX)
    if isinstance(slow, Rejection):
        assert fast == slow
        return
    assert not isinstance(fast, Rejection), fast
    for name in FIELDS:
        assert getattr(fast, name) == getattr(slow, name), name
    occurred = (
        fast.occurred_at
        if isinstance(fast, UsageEventV1)
        else parse_rfc3339(
            fast.occurred_at  # type: ignore[union-attr]
        )
    )
    assert occurred == slow.occurred_at


def test_valid_events_take_the_fast_path() -> None:
    for event in synthetic_events(200, seed=9):
        assert isinstance(decode_fast(json.dumps(event).encode(), MAX), FastUsageEvent)
        assert_same_verdict(json.dumps(event).encode())


@pytest.mark.parametrize("entry", CORPUS, ids=lambda e: e.name)
def test_hostile_corpus_same_verdict(entry: Entry) -> None:
    assert_same_verdict(entry.value)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_same_verdict(value: bytes) -> None:
    assert_same_verdict(value)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=300),
)
_base = next(iter(synthetic_events(1, seed=1)))


@settings(max_examples=1500, deadline=None)
@given(
    st.dictionaries(st.sampled_from([*_base, "extra", "schema_version"]), _scalars, max_size=6),
    st.lists(st.sampled_from(list(_base)), max_size=3),
)
def test_mutated_events_same_verdict(changes: dict[str, Any], dropped: list[str]) -> None:
    event = {k: v for k, v in _base.items() if k not in dropped} | changes
    assert_same_verdict(json.dumps(event).encode())


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["occurred_at"]),
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2})?(\.[0-9]{1,12})?"
        r"([Zz]|[+-][0-9]{2}:?[0-9]{2})?\Z"
    ),
)
def test_timestamps_same_verdict(field: str, stamp: str) -> None:
    assert_same_verdict(json.dumps(_base | {field: stamp}).encode())


@pytest.mark.parametrize(
    "stamp",
    [
        "1999-12-31T23:59:59.9999999Z",  # truncation keeps it in 1999: rejected by both
        "1999-12-31T23:59:59.999999Z",
        "2000-01-01T00:00:00Z",
        "2000-01-01T01:00:00+01:00",  # exactly the lower bound, in another zone
        "2099-12-31T23:59:59.999999Z",
        "2100-01-01T00:00:00Z",
        "2099-12-31T23:30:00-00:31",
        "2026-01-01T00:00:00+05:60",
        "2026-01-01T00:00:00+24:00",
        "2026-02-29T00:00:00Z",
        "2028-02-29T00:00:00Z",
        "2026-01-01T23:59:60Z",
        "2026-01-01t00:00:00z",
        "2026-01-01 00:00:00Z",
        "2026-01-01T00:00Z",
        "2026-01-01T00:00:00",
        "2026-01-01T00:00:00.Z",
        "0001-01-01T00:00:00Z",
    ],
)
def test_timestamp_edges_same_verdict(stamp: str) -> None:
    assert_same_verdict(json.dumps(_base | {"occurred_at": stamp}).encode())
