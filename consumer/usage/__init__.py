"""LLM usage into OpenTelemetry metrics: the tracker port, batch recording, the meter provider."""
