"""llm-usage-consumer: LLM gateway usage events from Kafka to Prometheus, at least once.

The public layer. Below it, one package per concern (the README's "Layout" lists every module):
`kafka` (the client boundary), `pipeline` (the loop and its stages), `usage` (the tracker port and
the meter provider), `exposition` (what Prometheus reads), `web` (the HTTP face) and `devtools`
(local broker, demo, synthetic producer); `app` wires them from the settings, `cli` parses.
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
