"""Publishing events: realistic synthetic ones for demos and tests, or a file's lines verbatim.

The synthetic mix is deterministic for a seed, so tests and benchmarks can compute the exact
totals they expect.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from consumer.kafka.topics import CHECK_TIMEOUT_S, check_produce_topic
from consumer.keys.attributes import attribute_key
from consumer.keys.strategies import KeyStrategy
from schemas import UsageEventV1

__all__ = ["MIX_FIELDS", "Publisher", "synthetic_events"]

_MODELS = {
    "openai": ["gpt-4o", "gpt-4o-mini", "o3", "gpt-4.1"],
    "anthropic": ["claude-sonnet-4", "claude-opus-4", "claude-haiku-3.5"],
    "google": ["gemini-2.5-pro", "gemini-2.5-flash"],
    "bedrock": ["anthropic.claude-sonnet-4", "meta.llama3-70b"],
}
_PROVIDER_UUIDS = {name: str(uuid.uuid5(uuid.NAMESPACE_DNS, name)) for name in _MODELS}
# A gateway routes each provider through a few load-balancer rules and API scenarios; keeping
# them few keeps the attribute sets at a realistic few thousand.
_RULES = {name: ["", str(uuid.uuid5(uuid.NAMESPACE_URL, f"rule/{name}"))] for name in _MODELS}
_SCENARIOS = {
    "openai": ["openai"],
    "anthropic": ["anthropic", "claude_code"],
    "google": ["openai"],
    "bedrock": ["anthropic"],
}
_TIERS = ["", "free", "pro", "enterprise"]
_ERROR_CODES = ["rate_limited", "context_length_exceeded", "upstream_timeout", "server_error"]


#: The fields the hand-made mix below draws. Any other field of the event gets one of the
#: `examples` its declaration (schemas/usage_event.py) gives (the first in 80% of the events, as
#: the common value), from a generator of its own, so a new field shows up in demos and tests
#: without touching this file, and the mix of the fields above stays the same for a seed.
MIX_FIELDS = frozenset(
    {
        *("schema_version", "event_id", "occurred_at", "provider", "provider_uuid", "model"),
        *("request_model", "scenario", "status", "input_tokens", "output_tokens"),
        *("cache_read_tokens", "cache_input_tokens", "cache_write_tokens", "system_tokens"),
        *("streamed", "latency_ms", "user_tier"),
        *("rule_uuid", "error_code"),
    }
)
_EXAMPLES = tuple(
    (name, field.examples)
    for name, field in UsageEventV1.model_fields.items()
    if name not in MIX_FIELDS and field.examples
)


def synthetic_events(count: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """`count` valid schema-v1 events with a realistic mix of providers, models and outcomes."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    extra = random.Random(f"{seed}/examples")  # noqa: S311
    providers = list(_MODELS)
    for i in range(count):
        provider = rng.choice(providers)
        model = rng.choice(_MODELS[provider])
        roll = rng.random()
        status = "success" if roll < 0.93 else ("error" if roll < 0.98 else "canceled")
        streamed = rng.random() < 0.6
        input_tokens = int(rng.lognormvariate(6.5, 1.2)) if status != "error" else 0
        output_tokens = int(rng.lognormvariate(5.0, 1.0)) if status == "success" else 0
        event: dict[str, Any] = {
            "schema_version": 1,
            "event_id": f"{seed}-{i}-{rng.getrandbits(32):08x}",
            "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "provider": provider,
            "provider_uuid": _PROVIDER_UUIDS[provider],
            "model": model,
            "request_model": model if rng.random() < 0.8 else f"{model}-latest",
            "scenario": rng.choice(_SCENARIOS[provider]),
            "status": status,
            "input_tokens": min(input_tokens, 2_000_000),
            "output_tokens": min(output_tokens, 200_000),
            "cache_read_tokens": int(rng.lognormvariate(7, 1)) if rng.random() < 0.3 else 0,
            "system_tokens": rng.randint(1, 50) if rng.random() < 0.1 else 0,
            "streamed": streamed,
            "latency_ms": min(int(rng.lognormvariate(7.3, 1.0)), 3_600_000),
            "user_tier": rng.choice(_TIERS),
        }
        rule = rng.choice(_RULES[provider])
        if rule:
            event["rule_uuid"] = rule
        if status == "error":
            event["error_code"] = rng.choice(_ERROR_CODES)
        if extra.random() < 0.25:  # gateways not yet moved on send the seed's name
            event["cache_input_tokens"] = event.pop("cache_read_tokens")
        if extra.random() < 0.1:
            event["cache_write_tokens"] = min(
                int(extra.lognormvariate(6, 1)), event["input_tokens"]
            )
        for name, examples in _EXAMPLES:
            # The first example is the common value, as "chat" is of operations.
            common = extra.random() < 0.8 or len(examples) == 1
            event[name] = examples[0] if common else extra.choice(examples[1:])
        yield event


class Publisher:
    """A durable producer (acks=all, idempotent) that counts delivery failures.

    Keys go through murmur2, the Java client's and franz-go's partitioner, rather than
    librdkafka's CRC32 default: with attribute keys, a set must land on the same partition
    whichever producer sent it.

    Before anything is sent, the topic is looked up (`check_produce_topic`): a missing topic, a
    missing ACL or a broker that does not answer raises a UsageConsumerError with one line
    within `check_timeout_s`, rather than every message failing after its 30 s timeout.
    `check=False` skips that."""

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        *,
        check: bool = True,
        check_timeout_s: float = CHECK_TIMEOUT_S,
    ) -> None:
        if check:
            check_produce_topic(config, topic, check_timeout_s)
        self._producer = Producer(
            {
                "partitioner": "murmur2_random",
                **config,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 20,
            }
        )
        self._topic = topic
        self.delivered = 0
        self.failed: list[str] = []

    def _report(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed.append(err.str())

    def send(self, value: bytes, key: bytes | None = None) -> None:
        while True:
            try:
                self._producer.produce(self._topic, value=value, key=key, on_delivery=self._report)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def send_events(
        self,
        events: Iterator[dict[str, Any]],
        rate: float = 0.0,
        key: KeyStrategy = attribute_key,
    ) -> None:
        """Publish as JSON, keyed by `key` (consumer.keys; by default the attribute set);
        `rate` > 0 paces to that many per second."""
        start = time.monotonic()
        for n, event in enumerate(events):
            if rate > 0:
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self.send(json.dumps(event).encode(), key=key(event))

    def send_file(self, path: Path) -> None:
        """Each line's bytes unchanged as one message (the newline is not part of it)."""
        with path.open("rb") as lines:
            for line in lines:
                self.send(line.removesuffix(b"\n"))

    def flush(self, timeout: float = 30.0) -> int:
        return int(self._producer.flush(timeout))
