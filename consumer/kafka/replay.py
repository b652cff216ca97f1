"""Replay: move the group's offsets back for a backfill, then follow it until the lag is gone.

`usage-consumer replay --from-timestamp T` (or `--from-offset N`) plans, per partition, the
offset to restart from (the first message at or after T; or N, clamped to what the log still
holds), shows the plan and how many events it replays, asks for confirmation, resets the group's
committed offsets, and then draws a progress bar until the group has committed up to the end
offsets it saw when it reset them. Workers do the replaying: they must be stopped for the reset
(Kafka refuses to move the offsets of a group with live members) and started again afterwards.

Replayed events are counted again by the workers' counters: a backfill is for events Prometheus
never saw (its data was lost, a recording rule changed), not for events it already has. Given the
dead-letter topic, the plan also says how many of the replayed events were rejected before (their
source position is in a dead letter's `dlq.source.*` headers): the replay dead-letters them again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from consumer.errors import ConfigError, UsageConsumerError
from consumer.kafka import dlq

__all__ = [
    "PlanRow",
    "apply_plan",
    "follow",
    "live_members",
    "make_plan",
    "rejects_again",
    "render_plan",
    "render_rejects",
    "run",
]

_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PlanRow:
    partition: int
    committed: int  # -1: the group has no offset for it yet
    target: int
    end: int

    @property
    def replayed(self) -> int:
        return self.end - self.target


def live_members(admin: AdminClient, group: str) -> int:
    description = admin.describe_consumer_groups([group])[group].result(_TIMEOUT_S)
    return len(description.members)


def make_plan(
    admin: AdminClient,
    group: str,
    topic: str,
    *,
    from_timestamp_ms: int | None = None,
    from_offset: int | None = None,
) -> list[PlanRow]:
    if (from_timestamp_ms is None) == (from_offset is None):
        raise ValueError("give exactly one of from_timestamp_ms and from_offset")
    metadata = admin.list_topics(topic, timeout=_TIMEOUT_S).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise ConfigError("topic", f"topic {topic!r} does not exist")
    partitions = sorted(metadata.partitions)
    earliest = _offsets(admin, topic, partitions, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
    end = _offsets(admin, topic, partitions, OffsetSpec.latest())  # type: ignore[no-untyped-call]
    if from_timestamp_ms is not None:
        found = _offsets(admin, topic, partitions, OffsetSpec.for_timestamp(from_timestamp_ms))
        # No message at or after the timestamp: nothing to replay there (-1 means "none").
        targets = {p: end[p] if found[p] < 0 else found[p] for p in partitions}
    else:
        assert from_offset is not None
        targets = {p: min(max(from_offset, earliest[p]), end[p]) for p in partitions}
    committed = _committed(admin, group, topic, partitions)
    return [PlanRow(p, committed[p], targets[p], end[p]) for p in partitions]


def apply_plan(admin: AdminClient, group: str, topic: str, plan: list[PlanRow]) -> None:
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, row.partition, row.target) for row in plan]
    )
    result = admin.alter_consumer_group_offsets([request])[group].result(_TIMEOUT_S)
    failed = [tp for tp in result.topic_partitions if tp.error is not None]
    if failed:
        raise UsageConsumerError(
            f"could not reset {topic}/{failed[0].partition}: {failed[0].error}"
        )


def follow(
    admin: AdminClient,
    group: str,
    topic: str,
    plan: list[PlanRow],
    out: TextIO,
    *,
    interval_s: float = 1.0,
    timeout_s: float | None = None,
) -> bool:
    """Draw progress until the group committed up to the plan's end offsets; False on timeout."""
    total = sum(row.replayed for row in plan)
    partitions = [row.partition for row in plan]
    started = time.monotonic()
    terminal = bool(getattr(out, "isatty", lambda: False)())
    while True:
        committed = _committed(admin, group, topic, partitions)
        done = sum(
            min(max(committed[row.partition], row.target), row.end) - row.target for row in plan
        )
        out.write(_bar(done, total, time.monotonic() - started) + ("\r" if terminal else "\n"))
        out.flush()
        if done >= total:
            out.write("\nreplay complete: the lag is gone\n" if terminal else "replay complete\n")
            return True
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            out.write("\n")
            return False
        time.sleep(interval_s)


def run(
    admin: AdminClient,
    group: str,
    topic: str,
    out: TextIO,
    confirm: Callable[[str], bool],
    *,
    from_timestamp_ms: int | None = None,
    from_offset: int | None = None,
    timeout_s: float | None = None,
    dead_letter_topic: str | None = None,
    consumer_config: Mapping[str, Any] | None = None,
) -> int:
    """The whole command; returns the exit code.

    With `dead_letter_topic` (read with `consumer_config`, e.g. Settings.consumer_config()), the
    plan says how many replayed events were dead-lettered before and will be again."""
    if (dead_letter_topic is None) != (consumer_config is None):
        raise ValueError("give dead_letter_topic and consumer_config together")
    members = live_members(admin, group)
    if members:
        raise UsageConsumerError(
            f"group {group!r} has {members} live member(s): stop the workers first (Kafka "
            "refuses to move the offsets of an active group), then start them after the reset"
        )
    plan = make_plan(
        admin, group, topic, from_timestamp_ms=from_timestamp_ms, from_offset=from_offset
    )
    out.write(render_plan(group, topic, plan))
    total = sum(row.replayed for row in plan)
    again = ""
    if dead_letter_topic is not None and consumer_config is not None:
        rejects = rejects_again(consumer_config, dead_letter_topic, topic, plan)
        out.write(render_rejects(dead_letter_topic, rejects))
        again = f"; {sum(rejects.values()):,} rejects dead-lettered again"
    if not confirm(
        f"Reset group {group!r} and replay {total:,} events (counted again by the workers{again})?"
    ):
        out.write("nothing changed\n")
        return 1
    apply_plan(admin, group, topic, plan)
    out.write(f"offsets reset; start the workers to replay {total:,} events\n")
    out.flush()
    return 0 if follow(admin, group, topic, plan, out, timeout_s=timeout_s) else 1


def render_plan(group: str, topic: str, plan: list[PlanRow]) -> str:
    lines = [
        f"group {group}, topic {topic}",
        "partition  committed  ->  restart at      end  replay",
    ]
    for row in plan:
        committed = "-" if row.committed < 0 else f"{row.committed:,}"
        lines.append(
            f"{row.partition:>9}  {committed:>9}  ->  {row.target:>10,}  {row.end:>7,}"
            f"  {row.replayed:>6,}"
        )
    lines.append(
        f"{'total':>9}  {'':>9}      {'':>10}  {'':>7}  {sum(r.replayed for r in plan):>6,}"
    )
    return "\n".join(lines) + "\n"


def rejects_again(
    consumer_config: Mapping[str, Any], dead_letter_topic: str, topic: str, plan: list[PlanRow]
) -> dict[int, int]:
    """Per partition, the replayed events that have a dead letter: distinct source offsets in
    [target, end), however many letters each has."""
    ranges = {row.partition: (row.target, row.end) for row in plan if row.replayed > 0}
    found = dlq.count_rejects(consumer_config, dead_letter_topic, topic, ranges) if ranges else {}
    return {row.partition: found.get(row.partition, 0) for row in plan}


def render_rejects(dead_letter_topic: str, rejects: Mapping[int, int]) -> str:
    total = sum(rejects.values())
    if not total:
        return f"dead letters: none of the replayed events is in {dead_letter_topic}\n"
    parts = ", ".join(f"partition {p}: {n:,}" for p, n in sorted(rejects.items()) if n)
    return (
        f"dead letters: {total:,} of the replayed events were rejected before ({parts}); "
        f"the replay writes them to {dead_letter_topic} again\n"
    )


def _bar(done: int, total: int, elapsed: float, width: int = 30) -> str:
    share = 1.0 if total == 0 else done / total
    filled = int(share * width)
    rate = done / elapsed if elapsed > 0 else 0.0
    return (
        f"replay [{'#' * filled}{'.' * (width - filled)}] {share:4.0%}  "
        f"{done:,} of {total:,} events, lag {total - done:,}, {rate:,.0f}/s"
    )


def _offsets(admin: AdminClient, topic: str, partitions: list[int], spec: Any) -> dict[int, int]:
    request = {TopicPartition(topic, p): spec for p in partitions}
    return {
        tp.partition: future.result(_TIMEOUT_S).offset
        for tp, future in admin.list_offsets(request).items()
    }


def _committed(admin: AdminClient, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    result = admin.list_consumer_group_offsets([request])[group].result(_TIMEOUT_S)
    return {tp.partition: tp.offset for tp in result.topic_partitions}
