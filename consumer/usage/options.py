"""What one request carries, and which attributes it becomes: the label set of each profile.

:class:`UsageOptions` is the gateway's ``UsageOptions`` struct; :class:`UsageLike` is anything
with its fields (a validated event qualifies). A :class:`LabelSet` declares, once per metrics
profile, which of those fields become attributes, under which key, in which order, and when:
the Go tracker's ``buildAttributes`` as data. :data:`LLM_LABELS` is the seed tracker's (the
`llm` profile), :data:`GENAI_LABELS` the GenAI semantic conventions' (the `genai` profile).
Every attribute set a profile builds, per event or per batch, comes from its label set.

Adding a label field: the event field (schemas/usage_event.py), then here a ``UsageOptions``
field, its ``UsageLike`` property and one :class:`Label` line, then the docs.
tests/test_fields.py fails while any of these mirrors is missing.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias

from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
)
from opentelemetry.util.types import AttributeValue

__all__ = [
    "ATTR_ERROR_CODE",
    "ATTR_MODEL",
    "ATTR_PROVIDER",
    "ATTR_PROVIDER_UUID",
    "ATTR_REQUEST_MODEL",
    "ATTR_RESPONSE_STATUS",
    "ATTR_RULE_UUID",
    "ATTR_SCENARIO",
    "ATTR_STREAMING",
    "ATTR_TINGLY_PROVIDER_UUID",
    "ATTR_TINGLY_RULE_UUID",
    "ATTR_TINGLY_SCENARIO",
    "ATTR_TINGLY_STREAMING",
    "ATTR_TINGLY_USER_TIER",
    "ATTR_TOKEN_TYPE",
    "ATTR_USER_TIER",
    "GENAI_DEFAULT_OPERATION",
    "GENAI_LABELS",
    "LLM_LABELS",
    "MAX_ERROR_CODE_BYTES",
    "STATUS_CANCELED",
    "STATUS_ERROR",
    "STATUS_SUCCESS",
    "TOKEN_TYPE_CACHE",
    "TOKEN_TYPE_SYSTEM",
    "Attributes",
    "Label",
    "LabelKey",
    "LabelSet",
    "UsageLike",
    "UsageOptions",
    "truncate_utf8",
    "with_token_type",
]

# --- Attribute keys (a contract: dashboards query these) ----------------------------------------

ATTR_PROVIDER: Final = "llm.provider"
ATTR_PROVIDER_UUID: Final = "llm.provider.uuid"
ATTR_MODEL: Final = "llm.model"
ATTR_REQUEST_MODEL: Final = "llm.request.model"
ATTR_SCENARIO: Final = "llm.scenario"
ATTR_STREAMING: Final = "llm.streaming"
ATTR_RESPONSE_STATUS: Final = "llm.response.status"
ATTR_RULE_UUID: Final = "llm.rule.uuid"
ATTR_USER_TIER: Final = "llm.user.tier"
ATTR_ERROR_CODE: Final = "llm.error.code"
ATTR_TOKEN_TYPE: Final = "llm.token_type"  # noqa: S105 (an attribute key, not a secret)

# The GenAI profile's keys: the semantic conventions' own, and the gateway's `tingly.*` ones.
ATTR_TINGLY_SCENARIO: Final = "tingly.scenario"
ATTR_TINGLY_PROVIDER_UUID: Final = "tingly.provider.uuid"
ATTR_TINGLY_STREAMING: Final = "tingly.streaming"
ATTR_TINGLY_RULE_UUID: Final = "tingly.rule.uuid"
ATTR_TINGLY_USER_TIER: Final = "tingly.user.tier"
GENAI_DEFAULT_OPERATION: Final = "chat"

TOKEN_TYPE_CACHE: Final = "cache"  # noqa: S105 (attribute value)
TOKEN_TYPE_SYSTEM: Final = "system"  # noqa: S105 (attribute value)

STATUS_SUCCESS: Final = "success"
STATUS_ERROR: Final = "error"
STATUS_CANCELED: Final = "canceled"

#: Error codes are cut to at most this many UTF-8 bytes: every distinct attribute set is a series
#: the SDK keeps for the life of the process, so free-form error text must not reach it uncut.
MAX_ERROR_CODE_BYTES: Final = 64


def truncate_utf8(s: str, max_bytes: int) -> str:
    """Return the longest prefix of ``s`` whose UTF-8 encoding is at most ``max_bytes`` bytes.

    Unlike a plain byte cut (what the Go original does), this never splits a character: a
    multi-byte character that would straddle the limit is dropped whole. Lone surrogates (which
    can come out of JSON ``\\ud800`` escapes) count as the 3 bytes they take in ``surrogatepass``
    encoding and are kept as they are.
    """
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    # A code point takes at most 4 bytes in UTF-8: short strings need no encoding at all.
    if len(s) * 4 <= max_bytes:
        return s
    encoded = s.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return s
    cut = max_bytes
    # encoded[cut] is the first byte dropped; while it is a continuation byte (0b10xxxxxx), the
    # character it belongs to started before the cut: back up to that character's lead byte.
    while cut > 0 and (encoded[cut] & 0xC0) == 0x80:
        cut -= 1
    return encoded[:cut].decode("utf-8", "surrogatepass")


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageOptions:
    """The options for recording the token usage of one LLM gateway request."""

    provider: str = ""
    """Name of the LLM provider (e.g. ``"openai"``, ``"anthropic"``)."""

    provider_uuid: str = ""
    """Unique identifier of the provider."""

    model: str = ""
    """The model actually used (not the requested model)."""

    request_model: str = ""
    """The original model name requested by the user."""

    rule_uuid: str = ""
    """The load balancer rule UUID."""

    scenario: str = ""
    """The API scenario (e.g. ``"openai"``, ``"anthropic"``, ``"claude_code"``)."""

    input_tokens: int = 0
    """Number of input/prompt tokens consumed (excluding cache)."""

    output_tokens: int = 0
    """Number of output/completion tokens consumed."""

    cache_input_tokens: int = 0
    """Number of cache-related tokens consumed (the seed's name of ``cache_read_tokens``)."""

    cache_read_tokens: int = 0
    """Input tokens served from the prompt cache (the current gateway's ``CacheReadTokens``).

    The same quantity as ``cache_input_tokens``: set either; both set and different is an
    error. Once built, both hold it."""

    cache_write_tokens: int = 0
    """Input tokens written to the prompt cache (already counted in ``input_tokens``)."""

    system_tokens: int = 0
    """Tokens consumed by system-level operations."""

    streamed: bool = False
    """Whether this was a streaming request."""

    status: str = ""
    """The request status: ``"success"``, ``"error"`` or ``"canceled"``."""

    error_code: str = ""
    """The error code if status is not ``"success"``."""

    latency_ms: int = 0
    """The request processing time in milliseconds."""

    user_tier: str = ""
    """A low-cardinality class for enterprise observability."""

    operation: str = ""
    """The GenAI operation (``gen_ai.operation.name``); empty means ``"chat"``."""

    def __post_init__(self) -> None:
        read, seed = self.cache_read_tokens, self.cache_input_tokens
        if read and seed and read != seed:
            raise ValueError(
                f"cache_read_tokens ({read}) and cache_input_tokens ({seed}) name the same "
                "quantity and must agree"
            )
        # Frozen: set once, while building.
        object.__setattr__(self, "cache_read_tokens", read or seed)
        object.__setattr__(self, "cache_input_tokens", read or seed)


class UsageLike(Protocol):
    """Anything with UsageOptions' fields: record_batch reads them, never copies the object.

    A validated event (schemas.UsageEventV1) qualifies, so the worker records events as decoded.
    """

    @property
    def provider(self) -> str: ...
    @property
    def provider_uuid(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def request_model(self) -> str: ...
    @property
    def rule_uuid(self) -> str: ...
    @property
    def scenario(self) -> str: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cache_input_tokens(self) -> int: ...
    @property
    def cache_read_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...
    @property
    def system_tokens(self) -> int: ...
    @property
    def streamed(self) -> bool: ...
    @property
    def status(self) -> str: ...
    @property
    def error_code(self) -> str: ...
    @property
    def latency_ms(self) -> int: ...
    @property
    def user_tier(self) -> str: ...
    @property
    def operation(self) -> str: ...


# --- The label sets ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Label:
    """One attribute of every measurement: where its value comes from and when it is present."""

    field: str
    """The UsageOptions field it is read from."""
    key: str
    """The attribute key."""
    always: bool
    """Present even when empty (the tracker's fixed attributes); else only when non-empty."""
    max_bytes: int | None = None
    """Cut to at most this many UTF-8 bytes (free-form text must not mint series)."""
    default: str | None = None
    """The value when the field is empty (GenAI's operation name is "chat" then)."""


Attributes: TypeAlias = dict[str, AttributeValue]
LabelKey: TypeAlias = tuple[AttributeValue, ...]
"""A request's label values in a label set's order: what decides its attribute set."""


class LabelSet:
    """The attributes of a request, in the order the tracker builds them.

    `key` reads a request's label values in one C call (the hot path); `canonical` applies the
    cuts and defaults, so requests that differ only past a cut share one set; `attributes`
    builds the set. Latency is never an attribute: it is near-unique per request and would
    create one series per request.
    """

    __slots__ = ("_adjust", "key", "labels")

    def __init__(self, *labels: Label) -> None:
        self.labels = labels
        self.key: Final[Callable[[UsageLike], LabelKey]] = operator.attrgetter(
            *(label.field for label in labels)
        )
        self._adjust = tuple(
            (i, label.max_bytes, label.default)
            for i, label in enumerate(labels)
            if label.max_bytes is not None or label.default is not None
        )

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(label.field for label in self.labels)

    def canonical(self, raw: LabelKey) -> LabelKey:
        """`raw` with every value cut and defaulted as its attribute is."""
        values: list[AttributeValue] | None = None
        for i, max_bytes, default in self._adjust:
            value = raw[i]
            if not value and default is not None:
                value = default
            elif isinstance(value, str) and max_bytes is not None:
                value = truncate_utf8(value, max_bytes)
            if value != raw[i]:
                values = values if values is not None else list(raw)
                values[i] = value
        return raw if values is None else tuple(values)

    def attributes(self, key: LabelKey) -> Attributes:
        """The attribute set of one request, from its canonical label key."""
        attrs: Attributes = {}
        for label, value in zip(self.labels, key, strict=True):
            if label.always or value:
                attrs[label.key] = value
        return attrs

    def of(self, opts: UsageLike) -> Attributes:
        """The attribute set of one request (the per-event path)."""
        return self.attributes(self.canonical(self.key(opts)))


#: The seed tracker's attributes (the `llm` profile).
LLM_LABELS: Final = LabelSet(
    Label("provider", ATTR_PROVIDER, always=True),
    Label("provider_uuid", ATTR_PROVIDER_UUID, always=True),
    Label("model", ATTR_MODEL, always=True),
    Label("request_model", ATTR_REQUEST_MODEL, always=True),
    Label("scenario", ATTR_SCENARIO, always=True),
    Label("streamed", ATTR_STREAMING, always=True),
    Label("status", ATTR_RESPONSE_STATUS, always=True),
    Label("rule_uuid", ATTR_RULE_UUID, always=False),
    Label("user_tier", ATTR_USER_TIER, always=False),
    Label("error_code", ATTR_ERROR_CODE, always=False, max_bytes=MAX_ERROR_CODE_BYTES),
)

#: The GenAI semantic conventions' attributes as the gateway sets them (the `genai` profile).
#: Status and error code are not labels here: the duration adds ``error.type`` to errors only.
GENAI_LABELS: Final = LabelSet(
    Label("operation", GEN_AI_OPERATION_NAME, always=True, default=GENAI_DEFAULT_OPERATION),
    Label("provider", GEN_AI_PROVIDER_NAME, always=True),
    Label("model", GEN_AI_RESPONSE_MODEL, always=True),
    Label("request_model", GEN_AI_REQUEST_MODEL, always=True),
    Label("scenario", ATTR_TINGLY_SCENARIO, always=True),
    Label("provider_uuid", ATTR_TINGLY_PROVIDER_UUID, always=True),
    Label("streamed", ATTR_TINGLY_STREAMING, always=True),
    Label("rule_uuid", ATTR_TINGLY_RULE_UUID, always=False),
    Label("user_tier", ATTR_TINGLY_USER_TIER, always=False),
)


def with_token_type(attrs: Attributes, token_type: str) -> Attributes:
    extended = dict(attrs)
    extended[ATTR_TOKEN_TYPE] = token_type
    return extended
