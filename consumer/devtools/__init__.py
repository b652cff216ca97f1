"""Development tools, not the worker: the local Kafka broker, the demo, the synthetic producer."""
