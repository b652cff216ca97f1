"""The metrics as Prometheus reads them: the SDK reader, cardinality, text format, self-metrics."""
