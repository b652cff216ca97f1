"""llm-usage-consumer: LLM gateway usage events from Kafka to Prometheus, at least once.

The public layer; each pipeline stage lives in a module of its own (source, validate, batch,
record, deadletter, commit, serve), ordered by `worker` and wired by `cli`.
"""

from consumer.errors import (
    BrokerError,
    CommitError,
    ConfigError,
    ConsumeError,
    KafkaOperationError,
    UsageConsumerError,
)
from consumer.settings import Settings, load_settings
from consumer.usage.tracker import TokenTracker, UsageLike, UsageOptions

__all__ = [
    "BrokerError",
    "CommitError",
    "ConfigError",
    "ConsumeError",
    "KafkaOperationError",
    "Settings",
    "TokenTracker",
    "UsageConsumerError",
    "UsageLike",
    "UsageOptions",
    "load_settings",
]
