"""Topic administration: create the topics a worker needs, where they are missing."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

__all__ = ["ensure_topics"]


def ensure_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    """Create missing topics (replication 1: for the local broker only)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [NewTopic(t, partitions, 1) for t in topics if t not in existing]
    for future in admin.create_topics(missing).values() if missing else []:
        future.result(timeout=30)
