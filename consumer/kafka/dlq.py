"""Dead letters for operators: `usage-consumer dlq summary|show|redrive`.

Every command reads the dead-letter topic as a snapshot: from the beginning of each partition up to
the end offsets it had when the command started (records that arrive meanwhile are left for the
next run), with a consumer that is assigned its partitions, joins no group and commits nothing.

    summary   dead letters per reason (optionally per source partition), with the first and
              last record timestamp of each: what is being rejected, and since when.
    show      the dead letters chosen by reason, source partition and source offset (or range),
              with their headers and their key and value escaped: control characters, escape
              sequences and invalid UTF-8 are printed as `\\xNN`/`\\n`/`\\uNNNN`, so a hostile
              value cannot drive the terminal; values are cut at `max_bytes`, saying how much.
    redrive   after a producer fix, republishes the chosen dead letters to their source topic
              and partition with their original key and headers (the `dlq.*` ones removed).
              Like `replay`, it shows a plan first and asks. Each source event goes out once,
              however many dead letters it has (a worker killed before its commit writes the
              letter again); letters the worker had to cut (`dlq.value.truncated`) are never
              redriven, as their value is not the original. The workers validate the redriven
              events again: the valid ones are counted, once (they never were, being rejected);
              the others are dead-lettered again. The dead letters stay in the topic (Kafka does
              not delete single records), so running the same redrive twice publishes twice.

`count_rejects` serves `replay`: how many events of a replayed range were dead-lettered before,
and so will be again.

The header names are the worker's (consumer.pipeline.deadletter writes them; this layer may not
import it, and tests/test_dlq.py checks that the two agree).
"""

from __future__ import annotations

import codecs
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from consumer.errors import ConfigError, ConsumeError, KafkaOperationError, UsageConsumerError
from consumer.kafka.refusals import ClientIdentity, access_error
from consumer.settings import setting_label

__all__ = [
    "DLQ_HEADER_PREFIX",
    "HEADER_DETAIL",
    "HEADER_REASON",
    "HEADER_SOURCE_OFFSET",
    "HEADER_SOURCE_PARTITION",
    "HEADER_SOURCE_TOPIC",
    "HEADER_VALUE_SIZE",
    "HEADER_VALUE_TRUNCATED",
    "DeadLetterReader",
    "DeadLetterRecord",
    "Filters",
    "RedrivePlan",
    "SummaryRow",
    "count_rejects",
    "escape",
    "parse_offsets",
    "plan_redrive",
    "redrive",
    "render_letter",
    "render_redrive_plan",
    "render_summary",
    "show",
    "summarize",
    "summary",
]

DLQ_HEADER_PREFIX = "dlq."
HEADER_REASON = "dlq.reason"
HEADER_DETAIL = "dlq.detail"
HEADER_SOURCE_TOPIC = "dlq.source.topic"
HEADER_SOURCE_PARTITION = "dlq.source.partition"
HEADER_SOURCE_OFFSET = "dlq.source.offset"
HEADER_VALUE_TRUNCATED = "dlq.value.truncated"
HEADER_VALUE_SIZE = "dlq.value.size"

NO_REASON = "-"  # a record without a dlq.reason header (not written by the worker)
DEFAULT_MAX_BYTES = 1024  # of a value `show` prints
_KEY_MAX_BYTES = 256
_HEADER_MAX_BYTES = 256
_TIMEOUT_S = 30.0
_BATCH = 500
# Reader settings the CLI's consumer config may carry that mean nothing to an assigned reader.
_GROUP_KEYS = (
    "group.instance.id",
    "group.protocol",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "statistics.interval.ms",
)

Position = tuple[int, int]  # (partition, offset)


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One record of the dead-letter topic, as read, with the worker's headers parsed."""

    partition: int  # in the dead-letter topic
    offset: int  # in the dead-letter topic
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]  # all of them, dlq.* included, in order
    reason: str
    detail: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    truncated: bool  # the worker cut the value (and dropped the original headers)
    original_size: int | None  # the value's size before the cut

    @classmethod
    def of(cls, message: Message) -> DeadLetterRecord:
        raw = message.headers() or []
        pairs = list(raw.items()) if isinstance(raw, dict) else list(raw)
        headers = tuple(
            (str(name), value.encode() if isinstance(value, str) else value)
            for name, value in pairs
        )
        # The worker appends its headers after the original ones: the last occurrence wins.
        dlq = {name: value for name, value in headers if name.startswith(DLQ_HEADER_PREFIX)}
        ts_type, ts = message.timestamp()
        return cls(
            partition=int(message.partition() or 0),
            offset=int(message.offset() or 0),
            timestamp_ms=None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
            key=message.key(),
            value=message.value(),
            headers=headers,
            reason=_text(dlq.get(HEADER_REASON)) or NO_REASON,
            detail=_text(dlq.get(HEADER_DETAIL)),
            source_topic=_text(dlq.get(HEADER_SOURCE_TOPIC)) or None,
            source_partition=_int(dlq.get(HEADER_SOURCE_PARTITION)),
            source_offset=_int(dlq.get(HEADER_SOURCE_OFFSET)),
            truncated=_text(dlq.get(HEADER_VALUE_TRUNCATED)) == "true",
            original_size=_int(dlq.get(HEADER_VALUE_SIZE)),
        )

    @property
    def original_headers(self) -> list[tuple[str, bytes | None]]:
        """The headers the source message had: every one but the dlq.* ones."""
        return [(n, v) for n, v in self.headers if not n.startswith(DLQ_HEADER_PREFIX)]

    @property
    def source(self) -> tuple[str, int, int] | None:
        """(topic, partition, offset) of the rejected message, if the headers say."""
        if self.source_topic is None or self.source_partition is None:
            return None
        if self.source_offset is None:
            return None
        return (self.source_topic, self.source_partition, self.source_offset)


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")


def _int(value: bytes | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Filters:
    """Which dead letters a command looks at; every field left empty matches all."""

    reasons: frozenset[str] = frozenset()
    source_partition: int | None = None
    source_offsets: tuple[int, int] | None = None  # first and last, both included

    @classmethod
    def of(
        cls,
        reasons: Sequence[str] | None = None,
        partition: int | None = None,
        offsets: str | None = None,
    ) -> Filters:
        """From the CLI's flags: `--reason` (repeatable), `--partition`, `--offset N|A-B`."""
        if partition is not None and partition < 0:
            raise UsageConsumerError(f"--partition {partition} is negative")
        return cls(
            reasons=frozenset(reasons or ()),
            source_partition=partition,
            source_offsets=None if offsets is None else parse_offsets(offsets),
        )

    def matches(self, letter: DeadLetterRecord) -> bool:
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.source_partition is not None and letter.source_partition != self.source_partition:
            return False
        if self.source_offsets is not None:
            first, last = self.source_offsets
            if letter.source_offset is None or not first <= letter.source_offset <= last:
                return False
        return True

    def describe(self) -> str:
        parts = []
        if self.reasons:
            parts.append("reason " + "|".join(sorted(self.reasons)))
        if self.source_partition is not None:
            parts.append(f"source partition {self.source_partition}")
        if self.source_offsets is not None:
            first, last = self.source_offsets
            parts.append(f"source offset {first}" if first == last else f"offsets {first}-{last}")
        return ", ".join(parts) or "all"


NO_FILTERS = Filters()


def parse_offsets(text: str) -> tuple[int, int]:
    """`N` or `A-B` (both included) as (first, last); UsageConsumerError if it is neither."""
    first, sep, last = text.strip().partition("-")
    try:
        bounds = (int(first), int(last) if sep else int(first))
    except ValueError:
        raise UsageConsumerError(
            f"--offset {text!r} is not an offset or a range: use e.g. 120 or 100-199"
        ) from None
    if bounds[0] < 0 or bounds[1] < bounds[0]:
        raise UsageConsumerError(f"--offset {text!r}: want 0 <= first <= last")
    return bounds


# ---------------------------------------------------------------------------------------------
# Reading


def reader_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A consumer config (e.g. Settings.consumer_config()) made into a snapshot reader's: a
    throwaway group id that never joins, never commits and never stores offsets."""
    out = {k: v for k, v in config.items() if k not in _GROUP_KEYS}
    out.update(
        {
            "group.id": f"usage-consumer-dlq-reader-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    return out


class DeadLetterReader:
    """The dead-letter topic up to the end offsets it had when the reader was made.

    `letters()` may be called more than once: each call reads the same snapshot again (a
    redrive plans on the first pass and produces on the second)."""

    def __init__(
        self, config: Mapping[str, Any], topic: str, *, timeout_s: float = _TIMEOUT_S
    ) -> None:
        self.topic = topic
        self._timeout_s = timeout_s
        self._config = reader_config(config)
        self._identity = ClientIdentity.of(self._config, topic)
        self._consumer = Consumer(self._config)
        try:
            self.bounds = self._snapshot()
        except BaseException:
            self._consumer.close()
            raise

    def __enter__(self) -> DeadLetterReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

    @property
    def total(self) -> int:
        """Records in the snapshot (compaction or transaction markers can make it fewer)."""
        return sum(high - low for low, high in self.bounds.values())

    def _failure(self, err: KafkaError, what: str) -> UsageConsumerError:
        return access_error(err, self._identity, self.topic) or ConsumeError(
            f"{what} failed: {err.str()}", topic=self.topic
        )

    def _snapshot(self) -> dict[int, tuple[int, int]]:
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=self._timeout_s)
        except KafkaException as exc:
            raise self._failure(exc.args[0], "reading the metadata") from None
        found = metadata.topics.get(self.topic)
        if found is None or not found.partitions:
            raise _missing_topic(self.topic)
        if found.error is not None:
            if found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise _missing_topic(self.topic)
            raise self._failure(found.error, "reading the metadata")
        bounds = {}
        for partition in sorted(found.partitions):
            try:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=self._timeout_s
                )
            except KafkaException as exc:
                raise self._failure(exc.args[0], "reading the end offsets") from None
            bounds[partition] = (int(low), int(high))
        return bounds

    def letters(self) -> Iterator[DeadLetterRecord]:
        """Every record of the snapshot, in offset order within each partition."""
        remaining = {p: high for p, (low, high) in self.bounds.items() if high > low}
        if not remaining:
            return
        self._consumer.assign(
            [TopicPartition(self.topic, p, self.bounds[p][0]) for p in sorted(remaining)]
        )
        try:
            deadline = time.monotonic() + self._timeout_s
            while remaining:
                messages = self._consumer.consume(_BATCH, timeout=0.5)
                if not messages:
                    if time.monotonic() > deadline:
                        raise ConsumeError(
                            f"no record in {self._timeout_s:g}s while reading "
                            f"{len(remaining)} partition(s) up to their end offsets",
                            topic=self.topic,
                        )
                    continue
                deadline = time.monotonic() + self._timeout_s
                for message in messages:
                    yield from self._take(message, remaining)
        finally:
            self._consumer.unassign()

    def _take(self, message: Message, remaining: dict[int, int]) -> Iterator[DeadLetterRecord]:
        partition = int(message.partition() or 0)
        err = message.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                remaining.pop(partition, None)  # at its end (markers past the last record)
                return
            raise self._failure(err, "reading")
        high = remaining.get(partition)
        offset = int(message.offset() or 0)
        if high is None or offset >= high:  # after the snapshot: the next run's
            remaining.pop(partition, None)
            return
        if offset >= high - 1:
            remaining.pop(partition)
        yield DeadLetterRecord.of(message)


def _missing_topic(topic: str) -> ConfigError:
    return ConfigError(setting_label("dlq_topic"), f"dead-letter topic {topic!r} does not exist")


def _read(
    config: Mapping[str, Any], topic: str, filters: Filters, timeout_s: float
) -> Iterator[tuple[DeadLetterRecord, bool]]:
    with DeadLetterReader(config, topic, timeout_s=timeout_s) as reader:
        for letter in reader.letters():
            yield letter, filters.matches(letter)


# ---------------------------------------------------------------------------------------------
# Rendering


def escape(data: bytes, max_bytes: int) -> tuple[str, int]:
    """`data`'s first `max_bytes` bytes as one printable line, and how many bytes were cut.

    UTF-8 is decoded; invalid bytes become `\\xNN`; control, format and other non-printable
    characters (ESC, newlines, bidi overrides) become `\\xNN`, `\\n`, `\\uNNNN`. A character
    the cut would split is left out whole (and counted as cut)."""
    head = data[:max_bytes]
    decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")
    text = decoder.decode(head, final=len(data) <= max_bytes)
    pending = len(decoder.getstate()[0])
    return _printable(text), len(data) - (len(head) - pending)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    at = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _bytes_field(data: bytes | None, max_bytes: int) -> str:
    if data is None:
        return "null"
    text, cut = escape(data, max_bytes)
    if cut:
        return f"{len(data):,} bytes, first {len(data) - cut:,} shown ({cut:,} cut): {text}"
    return f"{len(data):,} bytes: {text}"


def render_letter(letter: DeadLetterRecord, topic: str, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """One dead letter as `show` prints it: a heading line, then indented fields."""
    source = letter.source
    where = "-" if source is None else f"{_printable(source[0])}/{source[1]}@{source[2]}"
    lines = [
        f"{topic}/{letter.partition}@{letter.offset}  {_iso(letter.timestamp_ms)}",
        f"  reason   {_printable(letter.reason)}",
        f"  detail   {_printable(letter.detail)}",
        f"  source   {where}",
        f"  key      {_bytes_field(letter.key, _KEY_MAX_BYTES)}",
    ]
    for name, value in letter.original_headers:
        shown = "null" if value is None else escape(value, _HEADER_MAX_BYTES)[0]
        lines.append(f"  header   {_printable(name)}: {shown}")
    lines.append(f"  value    {_bytes_field(letter.value, max_bytes)}")
    if letter.truncated:
        size = "?" if letter.original_size is None else f"{letter.original_size:,}"
        lines.append(
            f"  cut      by the worker to fit the dead-letter topic: the original value had "
            f"{size} bytes, its headers were dropped"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# summary


@dataclass(frozen=True, slots=True)
class SummaryRow:
    reason: str
    source_partition: int | None  # None: not split by partition, or no such header
    count: int
    first_ms: int | None  # the smallest record timestamp
    last_ms: int | None  # the largest


@dataclass(slots=True)
class _Range:
    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None

    def add(self, ms: int | None) -> None:
        self.count += 1
        if ms is not None:
            self.first_ms = ms if self.first_ms is None else min(self.first_ms, ms)
            self.last_ms = ms if self.last_ms is None else max(self.last_ms, ms)


def summarize(
    letters: Iterable[DeadLetterRecord], *, by_partition: bool = False
) -> list[SummaryRow]:
    """Counts and timestamp range per reason (and source partition), sorted."""
    ranges: dict[tuple[str, int | None], _Range] = {}
    for letter in letters:
        key = (letter.reason, letter.source_partition if by_partition else None)
        ranges.setdefault(key, _Range()).add(letter.timestamp_ms)
    return [
        SummaryRow(reason, partition, r.count, r.first_ms, r.last_ms)
        for (reason, partition), r in sorted(
            ranges.items(), key=lambda item: (item[0][0], -1 if item[0][1] is None else item[0][1])
        )
    ]


def render_summary(
    topic: str,
    rows: Sequence[SummaryRow],
    *,
    by_partition: bool = False,
    filters: Filters = NO_FILTERS,
) -> str:
    chosen = "" if filters == NO_FILTERS else f" ({filters.describe()})"
    if not rows:
        return f"no dead letters in {topic}{chosen}\n"
    total = _Range()
    for row in rows:
        total.count += row.count
        for ms in (row.first_ms, row.last_ms):
            if ms is not None:
                total.first_ms = ms if total.first_ms is None else min(total.first_ms, ms)
                total.last_ms = ms if total.last_ms is None else max(total.last_ms, ms)
    table = [
        (
            _printable(row.reason)[:60],
            "-" if row.source_partition is None else str(row.source_partition),
            f"{row.count:,}",
            _iso(row.first_ms),
            _iso(row.last_ms),
        )
        for row in rows
    ]
    table.append(("total", "", f"{total.count:,}", _iso(total.first_ms), _iso(total.last_ms)))
    head = ("reason", "partition", "letters", "first (UTC)", "last (UTC)")
    widths = [max(len(r[i]) for r in [head, *table]) for i in range(5)]
    columns = [0, 1, 2, 3, 4] if by_partition else [0, 2, 3, 4]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i in columns:
            out.append(cells[i].rjust(widths[i]) if i in (1, 2) else cells[i].ljust(widths[i]))
        return "  ".join(out).rstrip()

    lines = [f"dead letters in {topic}{chosen}: {total.count:,}", line(head)]
    lines += [line(cells) for cells in table]
    return "\n".join(lines) + "\n"


def summary(
    consumer_config: Mapping[str, Any],
    dlq_topic: str,
    out: TextIO,
    *,
    filters: Filters = NO_FILTERS,
    by_partition: bool = False,
    timeout_s: float = _TIMEOUT_S,
) -> int:
    """`dlq summary`; returns the exit code."""
    chosen = (
        letter for letter, match in _read(consumer_config, dlq_topic, filters, timeout_s) if match
    )
    rows = summarize(chosen, by_partition=by_partition)
    out.write(render_summary(dlq_topic, rows, by_partition=by_partition, filters=filters))
    return 0


# ---------------------------------------------------------------------------------------------
# show


def show(
    consumer_config: Mapping[str, Any],
    dlq_topic: str,
    out: TextIO,
    *,
    filters: Filters = NO_FILTERS,
    limit: int | None = 20,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout_s: float = _TIMEOUT_S,
) -> int:
    """`dlq show`: the matching dead letters, oldest first per partition; returns the exit code.

    Prints at most `limit` of them (None: all) but reads to the end to say how many matched."""
    shown = matched = read = 0
    reasons: set[str] = set()
    for letter, match in _read(consumer_config, dlq_topic, filters, timeout_s):
        read += 1
        reasons.add(letter.reason)
        if not match:
            continue
        matched += 1
        if limit is None or shown < limit:
            out.write(("\n" if shown else "") + render_letter(letter, dlq_topic, max_bytes))
            shown += 1
    out.write(
        _show_footer(dlq_topic, filters, shown=shown, matched=matched, read=read, reasons=reasons)
    )
    return 0


def _show_footer(
    topic: str, filters: Filters, *, shown: int, matched: int, read: int, reasons: set[str]
) -> str:
    if not matched:
        seen = ", ".join(_printable(r) for r in sorted(reasons)) or "none"
        return (
            f"no dead letter matches ({filters.describe()}) among the {read:,} in {topic} "
            f"(reasons there: {seen})\n"
        )
    more = "; raise --limit to see more" if shown < matched else ""
    return f"\nshown {shown:,} of {matched:,} matching dead letters ({read:,} in {topic}){more}\n"


# ---------------------------------------------------------------------------------------------
# redrive


@dataclass(frozen=True)
class RedrivePlan:
    dlq_topic: str
    chosen: frozenset[Position]  # dead letters (partition, offset in the DLQ) to republish
    by_target: dict[tuple[str, str], int] = field(default_factory=dict)  # (topic, reason) -> n
    matched: int = 0  # dead letters the filters chose
    duplicates: int = 0  # further letters of a source event already chosen
    truncated: int = 0  # cut by the worker: not the original value, never redriven
    sourceless: int = 0  # no dlq.source.* headers: nowhere to send them
    highest_partition: dict[str, int] = field(default_factory=dict)  # per target topic

    @property
    def total(self) -> int:
        return len(self.chosen)

    @property
    def topics(self) -> list[str]:
        return sorted({topic for topic, _ in self.by_target})


def plan_redrive(
    letters: Iterable[DeadLetterRecord], filters: Filters, dlq_topic: str
) -> RedrivePlan:
    """Which dead letters a redrive republishes: the first of each source event matched."""
    chosen: set[Position] = set()
    sources: set[tuple[str, int, int]] = set()
    by_target: Counter[tuple[str, str]] = Counter()
    highest: dict[str, int] = {}
    matched = duplicates = truncated = sourceless = 0
    for letter in letters:
        if not filters.matches(letter):
            continue
        matched += 1
        source = letter.source
        if source is None:
            sourceless += 1
        elif letter.truncated:
            truncated += 1
        elif source in sources:
            duplicates += 1
        else:
            sources.add(source)
            chosen.add((letter.partition, letter.offset))
            by_target[(source[0], letter.reason)] += 1
            highest[source[0]] = max(highest.get(source[0], 0), source[1])
    return RedrivePlan(
        dlq_topic,
        frozenset(chosen),
        dict(by_target),
        matched,
        duplicates,
        truncated,
        sourceless,
        highest,
    )


def render_redrive_plan(plan: RedrivePlan, filters: Filters = NO_FILTERS) -> str:
    lines = [f"redrive from {plan.dlq_topic} ({filters.describe()}): {plan.matched:,} dead letters"]
    if plan.by_target:
        head = ("to topic", "reason", "events")
        rows = [
            (_printable(topic), _printable(reason), f"{n:,}")
            for (topic, reason), n in sorted(plan.by_target.items())
        ]
        rows.append(("total", "", f"{plan.total:,}"))
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
        for row in [head, *rows]:
            lines.append(
                f"{row[0].ljust(widths[0])}  {row[1].ljust(widths[1])}  {row[2].rjust(widths[2])}"
            )
    if plan.duplicates:
        lines.append(
            f"skipped: {plan.duplicates:,} more dead letter(s) of the same source events "
            "(each event is republished once)"
        )
    if plan.truncated:
        lines.append(
            f"skipped: {plan.truncated:,} dead letter(s) cut by the worker (not the original "
            "value; republish those from the producer)"
        )
    if plan.sourceless:
        lines.append(
            f"skipped: {plan.sourceless:,} record(s) without dlq.source.* headers (not "
            "written by the worker: no source topic to send them to)"
        )
    if plan.total:
        lines += [
            "Each event goes to its source topic and partition with its original key and headers",
            "(dlq.* removed). The workers validate them again: the valid ones are counted once",
            "(they never were, having been rejected); the still invalid ones are dead-lettered",
            f"again. The dead letters stay in {plan.dlq_topic}: redriving the same ones a second",
            "time publishes them again and counts the valid ones twice.",
        ]
    return "\n".join(lines) + "\n"


def redrive(
    consumer_config: Mapping[str, Any],
    producer_config: Mapping[str, Any],
    dlq_topic: str,
    out: TextIO,
    confirm: Callable[[str], bool],
    *,
    filters: Filters = NO_FILTERS,
    timeout_s: float = 60.0,
) -> int:
    """`dlq redrive`: plan, ask, republish, wait for every acknowledgement; the exit code.

    Raises KafkaOperationError when not every event was acknowledged (acks=all)."""
    with DeadLetterReader(consumer_config, dlq_topic, timeout_s=timeout_s) as reader:
        plan = plan_redrive(reader.letters(), filters, dlq_topic)
        out.write(render_redrive_plan(plan, filters))
        if not plan.total:
            out.write("nothing to redrive\n")
            return 1
        config = dict(producer_config)
        config.update({"acks": "all", "enable.idempotence": True})
        producer = Producer(config)
        topics = ", ".join(plan.topics)
        try:
            _check_targets(producer, plan, timeout_s)
            if not confirm(
                f"Republish {plan.total:,} events to {topics} (validated again by the workers)?"
            ):
                out.write("nothing redriven\n")
                return 1
            delivered = _republish(producer, reader, plan, out, timeout_s)
        finally:
            producer.close()
    out.write(f"redriven: {delivered:,} events to {topics}, every one acknowledged\n")
    return 0


def _check_targets(producer: Producer, plan: RedrivePlan, timeout_s: float) -> None:
    """Every target topic exists and still has the letters' partitions."""
    for topic, highest in sorted(plan.highest_partition.items()):
        try:
            metadata = producer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        except KafkaException as exc:
            raise KafkaOperationError(
                f"reading the metadata failed: {exc.args[0].str()}", topic=topic
            ) from None
        ok = metadata is not None and metadata.error is None
        count = len(metadata.partitions) if ok else 0
        if highest >= count:
            what = "does not exist" if not count else f"has no partition {highest}"
            raise UsageConsumerError(
                f"cannot redrive to {topic!r}: the topic {what}; nothing was republished"
            )


def _republish(
    producer: Producer,
    reader: DeadLetterReader,
    plan: RedrivePlan,
    out: TextIO,
    timeout_s: float,
) -> int:
    failed: list[tuple[DeadLetterRecord, str]] = []
    acknowledged: list[int] = []

    def produce(letter: DeadLetterRecord, topic: str, partition: int) -> None:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                acknowledged.append(1)
            else:
                failed.append((letter, err.str()))

        headers: list[tuple[str, str | bytes | None]] = [*letter.original_headers]
        while True:
            try:
                producer.produce(
                    topic,
                    value=letter.value,
                    key=letter.key,
                    headers=headers,
                    partition=partition,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                producer.poll(0.1)
            except KafkaException as exc:
                failed.append((letter, exc.args[0].str()))
                return

    for letter in reader.letters():
        if (letter.partition, letter.offset) in plan.chosen and letter.source is not None:
            produce(letter, letter.source[0], letter.source[1])
            producer.poll(0)
    unacknowledged = producer.flush(timeout_s)
    delivered = len(acknowledged)
    if failed or unacknowledged:
        for letter, error in failed[:10]:
            out.write(f"failed: {_where(letter)}: {error}\n")
        if len(failed) > 10:
            out.write(f"failed: {len(failed) - 10:,} more\n")
        first = f" (first error: {failed[0][1]})" if failed else ""
        advice = (
            "narrow the filters to the others before running it again (the acknowledged ones "
            "are published)"
            if delivered
            else "nothing was published"
        )
        late = (
            f", {unacknowledged:,} not acknowledged within {timeout_s:g}s" if unacknowledged else ""
        )
        raise KafkaOperationError(
            f"redrive incomplete: {delivered:,} of {plan.total:,} events acknowledged, "
            f"{len(failed):,} failed{first}{late}; {advice}",
            topic=", ".join(plan.topics),
        )
    return delivered


def _where(letter: DeadLetterRecord) -> str:
    source = letter.source
    return "-" if source is None else f"{_printable(source[0])}/{source[1]}@{source[2]}"


# ---------------------------------------------------------------------------------------------
# replay's count


def count_rejects(
    consumer_config: Mapping[str, Any],
    dlq_topic: str,
    source_topic: str,
    ranges: Mapping[int, tuple[int, int]],
    *,
    timeout_s: float = _TIMEOUT_S,
) -> dict[int, int]:
    """Per source partition, how many distinct source offsets in [start, end) have a dead
    letter: the rejects a replay of those ranges dead-letters again."""
    seen: dict[int, set[int]] = {p: set() for p in ranges}
    with DeadLetterReader(consumer_config, dlq_topic, timeout_s=timeout_s) as reader:
        for letter in reader.letters():
            source = letter.source
            if source is None or source[0] != source_topic or source[1] not in ranges:
                continue
            start, end = ranges[source[1]]
            if start <= source[2] < end:
                seen[source[1]].add(source[2])
    return {p: len(offsets) for p, offsets in sorted(seen.items())}
