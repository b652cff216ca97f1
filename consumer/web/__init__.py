"""The HTTP face: /metrics, /healthz, /readyz, the status page, and TLS and basic auth."""
