"""`usage-consumer validate`: events checked offline, exactly as the worker would judge them.

Reads files or standard input (`-`). Each input is either one JSON document (the pretty-printed
examples in schemas/examples/ are), a JSON array of documents, or JSON lines (one event per
line, blank lines skipped), and the command says which it saw. Every invalid event is printed
with where it is and why (the dead-letter reason code and detail); a field the schema does not
know but that looks like one it does (`inputTokens` for `input_tokens`) is a warning, because
the worker ignores it and records 0 for the field meant.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from consumer.errors import UsageConsumerError
from consumer.pipeline.validate import (
    Rejection,
    UnknownFields,
    decode,
    known_as,
    unknown_fields,
)
from schemas import UsageEventV1

__all__ = ["CheckResult", "check_inputs", "documents"]


@dataclass
class CheckResult:
    valid: int = 0
    invalid: int = 0
    ignored: Counter[str] = field(default_factory=Counter)  # unknown fields with no likely match


def documents(data: bytes) -> tuple[str, list[tuple[str, bytes]]]:
    """What `data` holds ("one JSON document", "a JSON array of N documents", "JSON lines, N
    events"), and each event with where it is."""
    if not data.strip():
        return "nothing (empty input)", []
    try:
        whole = json.loads(data)
    except ValueError:  # not one document: JSON lines (or garbage, judged line by line)
        lines = [
            (f"line {number}", line.rstrip(b"\r"))
            for number, line in enumerate(data.split(b"\n"), start=1)
            if line.strip()
        ]
        return f"JSON lines, {len(lines)} events", lines
    if isinstance(whole, list):
        items = [(f"item {n}", json.dumps(item).encode()) for n, item in enumerate(whole, start=1)]
        return f"a JSON array of {len(items)} documents", items
    return "one JSON document", [("document", data)]


def check_inputs(
    names: list[str],
    max_bytes: int,
    unknown: UnknownFields,
    *,
    out: TextIO,
    err: TextIO,
    stdin: BinaryIO | None = None,
) -> CheckResult:
    """Check every input; findings to `out`, what each input held and the tally to `err`."""
    result = CheckResult()
    for name, data in _read(names, stdin):
        kind, events = documents(data)
        print(f"{name}: {kind}", file=err)
        for where, value in events:
            _check_one(f"{name} {where}", value, (max_bytes, unknown), out, result)
    if result.ignored:
        ignored = ", ".join(f"{n} ({c})" for n, c in sorted(result.ignored.items()))
        print(f"unknown fields ignored (events): {ignored}", file=err)
    print(f"{result.valid} valid, {result.invalid} invalid", file=err)
    return result


def _check_one(
    where: str,
    value: bytes,
    limits: tuple[int, UnknownFields],
    out: TextIO,
    result: CheckResult,
) -> None:
    outcome = decode(value, *limits)
    if isinstance(outcome, Rejection):
        result.invalid += 1
        print(f"{where}: {outcome.reason.value}: {outcome.detail}", file=out)
        return
    result.valid += 1
    assert isinstance(outcome, UsageEventV1)
    for name in unknown_fields(value):
        meant = known_as(name)
        if meant is None:
            result.ignored[name] += 1
        else:
            print(
                f"{where}: warning: unknown field {name!r} ignored: did you mean {meant!r}? "
                f"(the worker records {meant} as {getattr(outcome, meant)!r})",
                file=out,
            )


def _read(names: list[str], stdin: BinaryIO | None) -> Iterator[tuple[str, bytes]]:
    for name in names:
        if name == "-":
            yield "<stdin>", (stdin if stdin is not None else sys.stdin.buffer).read()
            continue
        path = Path(name)
        try:
            yield name, path.read_bytes()
        except FileNotFoundError:
            raise UsageConsumerError(f"validate: {name}: no such file") from None
        except IsADirectoryError:
            raise UsageConsumerError(f"validate: {name}: is a directory, not a file") from None
        except OSError as exc:
            raise UsageConsumerError(f"validate: {name}: cannot read: {exc.strerror}") from None
