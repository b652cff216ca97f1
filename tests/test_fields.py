"""One declaration of the event's fields and of the label set; every mirror is checked here.

The event's fields are declared once, in `schemas.usage_event.UsageEventV1`; each profile's label
set once, in `consumer.usage.options` (`LLM_LABELS`, `GENAI_LABELS`). Derived from them: the fast
decoder's struct, `to_options`, the trackers' attribute sets, the JSON Schema (tests/test_schema.py
checks it is fresh) and the synthetic producer's extra fields. Written out by hand, and so checked
here: `UsageOptions`, `UsageLike`, the synthetic mix, the Go example's struct and the README's
label list. Each test names the mirror that was missed.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import msgspec
import pytest

from consumer.devtools.produce import MIX_FIELDS, synthetic_events
from consumer.pipeline.validate import FastUsageEvent, decode_fast
from consumer.usage.options import GENAI_LABELS, LLM_LABELS, LabelSet, UsageLike, UsageOptions
from consumer.usage.record import OPTION_FIELDS, to_options
from schemas import UsageEventV1
from schemas.usage_event import SAME_QUANTITY

REPO = Path(__file__).resolve().parents[1]
ENVELOPE = ("schema_version", "event_id", "occurred_at")
"""Fields that say what the event is, not what the request did: never recorded."""
RECORDED = tuple(name for name in UsageEventV1.model_fields if name not in ENVELOPE)
#: Recorded fields that are deliberately not labels (numbers; latency would mint a series per
#: request). A new text or flag field must be a label of some profile or be listed here.
NOT_LABELS = frozenset(
    {
        *("input_tokens", "output_tokens", "cache_input_tokens", "cache_read_tokens"),
        *("cache_write_tokens", "system_tokens", "latency_ms"),
    }
)
LABEL_SETS = {"llm": LLM_LABELS, "genai": GENAI_LABELS}


def _python_type(annotation: object) -> type:
    """The plain type a model annotation reads as (a Literal of strings is a str)."""
    if typing.get_origin(annotation) is typing.Literal:
        return type(typing.get_args(annotation)[0])
    assert isinstance(annotation, type)
    return annotation


def test_usage_options_mirror_the_recorded_fields() -> None:
    options = {f.name: f for f in dataclasses.fields(UsageOptions)}
    assert set(options) == set(RECORDED), "UsageOptions (consumer/usage/options.py) is out of step"
    assert set(OPTION_FIELDS) == set(RECORDED)
    for name in RECORDED:
        model_field = UsageEventV1.model_fields[name]
        assert options[name].type == _python_type(model_field.annotation).__name__, name
        # The Go zero value: what an absent optional field means on both sides.
        expected = model_field.default if not model_field.is_required() else options[name].default
        assert options[name].default == expected, name


def test_usage_like_mirrors_usage_options() -> None:
    members = {
        name
        for name, value in vars(UsageLike).items()
        if isinstance(value, property) and not name.startswith("_")
    }
    assert members == set(RECORDED), "UsageLike (consumer/usage/options.py) is out of step"
    hints = typing.get_type_hints(UsageOptions)
    for name in RECORDED:
        getter = vars(UsageLike)[name].fget
        assert typing.get_type_hints(getter)["return"] == hints[name], name


@pytest.mark.parametrize("labels", LABEL_SETS.values(), ids=LABEL_SETS.keys())
def test_every_label_is_a_text_or_flag_field_once(labels: LabelSet) -> None:
    assert len(set(labels.fields)) == len(labels.fields)
    assert len({label.key for label in labels.labels}) == len(labels.labels)
    assert set(labels.fields) <= set(RECORDED)
    for label in labels.labels:
        assert _python_type(UsageEventV1.model_fields[label.field].annotation) in (str, bool)


def test_every_text_or_flag_field_is_a_label_of_some_profile() -> None:
    labelled = {field for labels in LABEL_SETS.values() for field in labels.fields}
    # The genai profile turns status and error_code into error.type on the duration.
    assert set(RECORDED) - labelled == NOT_LABELS, (
        "a recorded field is in no label set (consumer/usage/options.py) nor in NOT_LABELS"
    )


def test_the_fast_decoder_is_the_model_field_for_field() -> None:
    fields = msgspec.structs.fields(FastUsageEvent)
    assert tuple(f.name for f in fields) == tuple(UsageEventV1.model_fields)
    for f in fields:
        model_field = UsageEventV1.model_fields[f.name]
        assert f.required == model_field.is_required(), f.name
        if not f.required:
            sent_or_not = any(f.name in pair for pair in SAME_QUANTITY)
            assert f.default == (msgspec.UNSET if sent_or_not else model_field.default), f.name


def test_synthetic_events_carry_every_field() -> None:
    """Every field shows up with a non-zero value, so tests that compute totals from the mix
    exercise it: a field missing from the mix needs `examples` in its declaration."""
    for name, field in UsageEventV1.model_fields.items():
        assert name in MIX_FIELDS or field.examples, (
            f"{name}: give it examples=[...] in schemas/usage_event.py"
        )
    seen: set[str] = set()
    for event in synthetic_events(2000, seed=3):
        seen.update(name for name, value in event.items() if value not in ("", 0, False))
    assert seen == set(UsageEventV1.model_fields)


def _sent(event: dict[str, object], name: str) -> object:
    """What a field holds once validated: the value sent under it, or under its other name."""
    for pair in SAME_QUANTITY:
        if name in pair:
            return next((event[n] for n in pair if n in event), 0)
    return event.get(name, UsageEventV1.model_fields[name].default)


@pytest.mark.parametrize("labels", LABEL_SETS.values(), ids=LABEL_SETS.keys())
def test_a_decoded_event_becomes_exactly_its_options_and_attributes(labels: LabelSet) -> None:
    for event in synthetic_events(300, seed=8):
        decoded = decode_fast(msgspec.json.encode(event), 65_536)
        assert isinstance(decoded, FastUsageEvent)
        options = to_options(decoded)
        for name in RECORDED:
            assert getattr(options, name) == _sent(event, name), name
        expected = {}
        for label in labels.labels:
            value = getattr(options, label.field)
            if not value and label.default is not None:
                value = label.default
            if label.always or value:
                expected[label.key] = value
        attrs = labels.of(options)
        assert list(attrs) == list(expected)
        assert attrs == expected


@pytest.mark.parametrize(
    ("raw", "cut"),
    [("x" * 64, "x" * 64), ("x" * 65, "x" * 64), ("é" * 40, "é" * 32), ("", "")],
)
def test_labels_with_a_byte_limit_are_cut_on_a_character_boundary(raw: str, cut: str) -> None:
    (limited,) = [label for label in LLM_LABELS.labels if label.max_bytes is not None]
    options = UsageOptions(**{limited.field: raw})
    assert LLM_LABELS.of(options).get(limited.key, "") == cut


def test_the_go_example_publishes_every_field() -> None:
    source = (REPO / "examples" / "go-producer" / "event.go").read_text()
    struct = source[source.index("type UsageEvent struct") :]
    struct = struct[: struct.index("\n}")]
    tags = [tag.split(",")[0] for tag in re.findall(r'`json:"([^"]+)"`', struct)]
    older_names = {older for _current, older in SAME_QUANTITY}  # accepted, not sent any more
    assert sorted(tags) == sorted(set(UsageEventV1.model_fields) - older_names), (
        "examples/go-producer/event.go is out of step with the event's fields"
    )


def test_the_readme_names_every_label() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Metrics exported") :]
    for labels in LABEL_SETS.values():
        for label in labels.labels:
            name = label.key.replace(".", "_")
            assert f"`{name}`" in section, f"README's metrics section does not name {name}"
